//! Winograd convolution of 3x3 stride-1 convs (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016), in two tiles: F(2x2, 3x3) (`f2`) and F(4x4, 3x3)
//! (`f4`). Each output tile is `A^T [(G g G^T) . (B^T d B)] A`; summed over input channels the
//! elementwise product becomes independent matrix products (16 or 36), which the GEMM kernel runs
//! as a batch between an input transform and an output transform (`output`). `geom` holds what
//! both tiles share; the tile files do not import each other.

pub mod f2;
pub mod f4;
pub mod geom;
pub mod output;
