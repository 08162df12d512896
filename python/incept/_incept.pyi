"""Type stubs of incept's native module (re-exported by the `incept` package)."""

import os
from typing import Dict, List, Mapping, Optional, Sequence, Union, final, overload

import numpy as np
import numpy.typing as npt

__version__: str

class InceptError(RuntimeError):
    """An error reported by incept: a model it cannot import or compile, an artifact it cannot
    load or write, a failed run. The message is incept's."""

@final
class NodeArg:
    """The name, dtype and shape of a model input or output (onnxruntime's NodeArg, plus dtype)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str:
        """The numpy dtype name, e.g. 'float32'."""
    @property
    def shape(self) -> List[int]: ...
    @property
    def type(self) -> str:
        """The ONNX type as onnxruntime shows it, e.g. 'tensor(float)'."""

@final
class Model:
    """A compiled model. `run` releases the GIL; several threads may run one model at once."""

    @property
    def inputs(self) -> List[NodeArg]: ...
    @property
    def outputs(self) -> List[NodeArg]: ...
    @property
    def threads(self) -> int:
        """Worker threads a run uses."""
    def get_inputs(self) -> List[NodeArg]:
        """onnxruntime's name for `inputs`."""
    def get_outputs(self) -> List[NodeArg]:
        """onnxruntime's name for `outputs`."""
    @overload
    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]], /) -> Dict[str, npt.NDArray[np.generic]]:
        """Runs on `{input name: array}` and returns `{output name: array}`.

        Arrays must have the input's dtype and shape (non-contiguous arrays are copied).
        Raises ValueError for a missing, unknown or mistyped input, InceptError if the run fails."""
    @overload
    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: Mapping[str, npt.NDArray[np.generic]],
    ) -> List[npt.NDArray[np.generic]]:
        """onnxruntime's form: the outputs named (all of them when None), as a list in that order."""
    def save(
        self, path: Union[str, "os.PathLike[str]"], signing_key: Optional[Union[str, "os.PathLike[str]"]] = None
    ) -> None:
        """Writes the compiled model as an `.incept` artifact, which `load` reads without compiling;
        signed with the secret key file `signing_key` (from `incept keygen`) when given. A failure
        leaves whatever was at `path` untouched."""

def compile(
    path: Union[str, "os.PathLike[str]", bytes],
    threads: int = 0,
    outputs: Optional[Sequence[str]] = None,
    shapes: Optional[Mapping[str, Union[int, Sequence[int]]]] = None,
    opt_level: int = 2,
    precision: str = "f32",
    tolerance: Optional[float] = None,
) -> Model:
    """Compiles an ONNX model (a path, or the model's bytes) to machine code for this CPU.

    threads: worker threads of a run (0: one per physical core; 1: run on the calling thread).
    outputs: value names to cut the model at (feature extraction): they become the outputs, in
        that order, and only what they need is compiled; names as `incept inspect -O0` prints.
    shapes: an input name to its shape ({'input': [1, 3, 224, 224]}) or a symbolic dimension
        to its size ({'N': 1}), for models whose inputs are not fully static.
    opt_level: 0 (no graph passes), 1 (exact rewrites only) or 2 (all).
    precision: "f32" (the default: within f32 rounding of the reference) or "bf16" (opt-in:
        convs with constant weights multiply bf16-rounded weights and activations, summing in
        f32; needs a CPU with AVX512-BF16 or AMX; `incept check --precision bf16` measures the
        error on a model) or "auto" (bf16 except the nodes whose rounding would move the outputs
        by more than `tolerance`, default 1e-2, measured on seeded inputs against the reference)
        or "int8" (opt-in: a QDQ model's groups run as integer ops, as ONNX Runtime runs them;
        outputs can move by a quantisation step from the literal QDQ reading).
    Raises InceptError when the model cannot be read or compiled (or the CPU has no bf16)."""

def load(
    path: Union[str, "os.PathLike[str]"],
    threads: int = 0,
    trusted_key: Optional[Union[str, "os.PathLike[str]", bytes]] = None,
) -> Model:
    """Loads an `.incept` artifact written by `Model.save` or `incept compile -o`.

    An artifact is native code: load only files you trust. With `trusted_key` (the path of a
    `.pub` file from `incept keygen`, or its 32 key bytes) only an artifact signed by that key
    loads. Raises InceptError when the file is missing, not an artifact, corrupted, not signed
    by the trusted key, or needs CPU features this machine lacks."""
