"""A registered merge method: :class:`MethodSpec`, its parameters and how its kernel is
called.

Calling convention (what the executor does for each key): the tensors of the ``model``
parameters positionally, in parameter order (a variadic one contributes all of its tensors),
then every other parameter as a keyword: ``weights`` parameters resolved to this key's block
value (a float), ``number``/``int``/``string`` parameters as given. A ``number`` parameter
with ``base_of`` set is not passed to the kernel: it is folded into the BASE slot of its
weights parameter beforehand (see :meth:`MethodSpec.resolve_weights`). An elementwise kernel
also receives ``out=``, the float32 buffer it writes its result into and returns: a chunk of
the executor's when it splits a key, else one :meth:`MethodSpec.call_kernel` allocates, so a
whole key and a chunk go through the same code. :meth:`MethodSpec.call_kernel` applies
exactly this rule. Kernels receive float32 tensors (the executor casts) and return float32.

BASE rule: a weights value that sets no BASE (a 25-value vector, a map without ``BASE:`` or
``default:``) takes its BASE from, in order: the parameter named by ``base_of`` when the
recipe gives it (it also overrides a BASE the value does set), then the weights parameter's
``base_default``, and if that is ``None`` too, resolving raises :class:`WeightsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mergelang.arch.scheme import BlockScheme
from mergelang.block_weights import BlockWeights, ResolvedWeights, WeightsError
from mergelang.methods.params import Param
from mergelang.methods.signature import KERNEL_EXTRAS

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DEFAULT_TEMPORARIES", "MethodSpec"]

DEFAULT_TEMPORARIES = 4
"""The full-size float32 temporaries a method that is not elementwise is taken to hold when
its registration does not say (see :attr:`MethodSpec.temporaries`)."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method.

    ``doc`` is the kernel's docstring; its first line (:attr:`formula`) is the formula.
    ``elementwise``: the kernel treats each element on its own, so the executor may fuse it
    with neighbours and split tensors into chunks; a method that is not gets each key's whole
    tensors (in their shapes) and returns the result instead of filling ``out``.
    ``needs_stats``: the method needs a pass over the whole model first (e.g. a norm over
    every key): ``stats`` makes a collector; before the merge the executor calls its
    ``add(key, block, *tensors)`` with the float32 operands of every merged key, then its
    ``finish()`` if it has one, and passes it to the kernel as ``stats=``.
    ``wants_key``: the kernel also receives ``key=`` (the checkpoint key being merged), e.g.
    to derive a per-key random stream that is the same whatever order keys come in.
    ``writes_out``: the (elementwise) kernel always writes into ``out``, which
    :meth:`call_kernel` allocates when the caller gives none; false only for kernels
    registered with a ``params=`` list, which take ``out=None`` and handle it themselves.
    ``temporaries``: how many float32 tensors of a key's full size a kernel that is not
    elementwise holds at its peak besides its operands and its result (sorted copies,
    masks, filtered differences); ``plan``'s working-memory estimate counts them. Measured
    for each built-in method on a 4096 x 4096 key (see ``tests/test_many_outputs.py``);
    a plugin that does not say is taken to hold :data:`DEFAULT_TEMPORARIES`.
    ``propagates_nonfinite``: a NaN or an infinity in any operand makes the result NaN or
    infinite at that element, whatever the parameters (sums and products only, nothing that
    selects, clamps or compares). The run then checks such a node's inputs through its
    result: one sum per chunk instead of one per operand, the operands looked at only when
    that sum is not finite (see :meth:`mergelang.run.compute.Evaluator.operands`).
    """

    name: str
    params: tuple[Param, ...]
    doc: str
    elementwise: bool
    needs_stats: bool
    kernel: Callable[..., Any]
    stats: Callable[[], Any] | None = None
    wants_key: bool = False
    writes_out: bool = False
    temporaries: int = 0
    propagates_nonfinite: bool = False

    @property
    def formula(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    def signature(self) -> str:
        """``weighted_sum(a, b, alpha=0.5, base=None)``."""
        return f"{self.name}({', '.join(p.signature() for p in self.params)})"

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    @property
    def model_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == "model")

    @property
    def kernel_params(self) -> tuple[Param, ...]:
        """The parameters passed to the kernel as keywords (not models, not ``base_of``)."""
        return tuple(p for p in self.params if p.kind != "model" and p.base_of is None)

    def base_param_for(self, weights_name: str) -> Param | None:
        """The ``number`` parameter that sets the BASE of weights parameter ``weights_name``."""
        for p in self.params:
            if p.base_of == weights_name:
                return p
        return None

    def resolve_weights(
        self,
        name: str,
        value: BlockWeights,
        scheme: BlockScheme,
        *,
        base: float | None = None,
    ) -> ResolvedWeights:
        """Resolve weights parameter ``name`` for an architecture's block ``scheme``.

        ``base`` is the value of the parameter whose ``base_of`` is ``name`` (``None`` when the
        recipe leaves it out): it overrides BASE. Otherwise an unset BASE falls back to the
        parameter's ``base_default``; a :class:`WeightsError` names the method and parameter.
        """
        param = self.param(name)
        if param is None or param.kind != "weights":
            raise KeyError(f"{self.name} has no weights parameter {name!r}")
        weights = value if base is None else value.with_base(base)
        try:
            return weights.resolve(scheme, base=param.base_default)
        except WeightsError as exc:
            raise WeightsError(
                f"{name} of {self.name}: {exc.message}", hint=exc.hint, index=exc.index
            ) from None

    def call_kernel(
        self, tensors: Sequence[Any], scalars: Mapping[str, object], **extra: Any
    ) -> Any:
        """Call the kernel per the calling convention: ``tensors`` positionally, then the
        kernel parameters found in ``scalars`` as keywords (``base_of`` parameters and unknown
        names are left out), then ``extra`` (``out=``, ``stats=``, ``key=``). A kernel that
        :attr:`writes_out` given no ``out`` gets a new float32 buffer of the first operand's
        shape, on its device."""
        keywords = {p.name: scalars[p.name] for p in self.kernel_params if p.name in scalars}
        if self.writes_out and extra.get("out") is None:
            extra["out"] = _result_buffer(self.name, tensors)
        return self.kernel(*tensors, **keywords, **extra)

    def __call__(self, *tensors: Any, **arguments: Any) -> Any:
        """The method on one key's tensors, from Python: ``spec(a, b, alpha=0.25)``.

        Arguments are the kernel's parameters by name (a weights parameter takes this key's
        value, one float; one left out takes its default), plus ``out=``, ``stats=`` and
        ``key=`` where the method takes them; the call goes through :meth:`call_kernel`. A
        ``base_of`` parameter is refused: it only sets the BASE of weights being resolved.
        """
        extra = {name: arguments.pop(name) for name in KERNEL_EXTRAS if name in arguments}
        for name in arguments:
            param = self.param(name)
            if param is None or param.kind == "model":
                raise TypeError(f"{self.name}() got an unexpected keyword argument {name!r}")
            if param.base_of is not None:
                raise TypeError(
                    f"{self.name}(): {name} sets the BASE of {param.base_of} when weights are "
                    f"resolved per block; give {param.base_of} the value for this key instead"
                )
        scalars = {
            p.name: p.default
            for p in self.kernel_params
            if not p.required and not isinstance(p.default, BlockWeights)
        }
        scalars.update(arguments)
        return self.call_kernel(tensors, scalars, **extra)


def _result_buffer(method: str, tensors: Sequence[Tensor]) -> Tensor:
    """An uninitialised float32 tensor of the first operand's shape, on its device: where an
    elementwise kernel writes a whole key's result (the operands share that shape)."""
    import torch

    if not tensors:
        raise TypeError(f"{method} needs at least one tensor")
    first = tensors[0]
    return torch.empty(first.shape, dtype=torch.float32, device=first.device)
