"""Structures of a sparse weight: which weights are kept or dropped together.

A structure is parsed from a string (`parse_structure`):

- ``unstructured`` (the default): any set of weights; a group is one weight.
- ``N:M`` (e.g. ``2:4``): in every group of M consecutive weights along the fan-in,
  exactly N are active, so every layer holds exactly N/M of its weights.
- ``block:B`` (e.g. ``block:4``): B x B blocks of the layer's (out, fan-in) matrix, all
  active or all inactive; blocks are ranked by the L2 norm of their scores.
- ``channel``: whole output channels (rows of the matrix: a Linear's output unit, a
  convolution's filter), ranked by the L2 norm of their scores. The sparsifiers hold a masked
  channel's bias and batch norm at 0 (`sparsetrain.algorithms.dead_channels`), so it outputs
  exactly 0 and `st.shrink` removes it.

**The (out, fan-in) matrix.** Every structure except ``unstructured`` works on a 2-D view
of a logical layer (`matrix`): rows are output units, and the fan-in is ordered channels-last,
(kernel positions..., input channels), as NVIDIA's 2:4 sparse GEMMs read a convolution
(apex ASP permutes a (K, C, R, S) filter to (R*S*K, C) and groups along C; cuSPARSELt
multiplies the implicit-GEMM matrix of a channels-last convolution). So for a Conv an N:M
group is M consecutive *input channels* at one kernel position and output filter, and a
Linear's group is M consecutive inputs of one output unit. A weight stored (in, out)
(transformers' ``Conv1D``, ``fan_in_dim=0``) is transposed first.

**Layers that do not fit.** N:M needs the number of input channels to be a multiple of M
(groups never straddle a kernel position); ``block:B`` needs B to divide both the rows and
the fan-in. `Structure.problem` names what does not fit; the sparsifiers keep such a layer
dense and say so in their coverage line (`fit_selection`), as apex ASP skips the layers it
cannot prune. ``channel`` fits every layer.

**Exact counts.** A layer's target is rounded to what the structure allows
(`Structure.round_count`): a whole number of groups (at least one) for block and channel,
and exactly N/M of the layer for N:M, whatever the allocation asked. Selection keeps the
tie rule of `sparsetrain.sparse.topk`: equal scores go to the lower group index (groups are
numbered row-major over the matrix's grid of groups), and within an N:M group to the lower
position.

Everything here is a pure function of tensors: the algorithms hold the state.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch

from sparsetrain.errors import ConfigError
from sparsetrain.registry import Registry
from sparsetrain.sparse.layers import Selection
from sparsetrain.sparse.topk import topk_mask

Shape = tuple[int, ...]


# --- the (out, fan-in) matrix of a logical layer --------------------------------------------
def _order(ndim: int, fan_in_dim: int) -> list[int]:
    """The permutation of a weight's dims into (out, kernel..., in)."""
    if ndim < 2:
        raise ValueError(f"a structured weight needs at least 2 dimensions; got {ndim}")
    out_dim = 1 if fan_in_dim == 0 else 0
    return [out_dim, *[d for d in range(ndim) if d not in (out_dim, fan_in_dim)], fan_in_dim]


def matrix_shape(shape: Shape, fan_in_dim: int = 1) -> tuple[int, int]:
    """(rows, fan-in) of the matrix view of a weight of ``shape``."""
    order = _order(len(shape), fan_in_dim)
    rows = shape[order[0]]
    return rows, math.prod(shape) // rows if rows else 0


def in_channels(shape: Shape, fan_in_dim: int = 1) -> int:
    """The size of the weight's input dimension (input channels of a Conv, inputs of a Linear)."""
    return shape[fan_in_dim]


def matrix(t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
    """``t`` as its (out, fan-in) matrix, fan-in ordered (kernel positions..., input channels)."""
    order = _order(t.dim(), fan_in_dim)
    return t.permute(order).reshape(matrix_shape(tuple(t.shape), fan_in_dim))


def unmatrix(m: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
    """The inverse of `matrix`: a tensor of ``shape`` whose matrix view is ``m``."""
    order = _order(len(shape), fan_in_dim)
    permuted = m.reshape([shape[d] for d in order])
    inverse = [order.index(d) for d in range(len(shape))]
    return permuted.permute(inverse).contiguous()


# --- per-group selection -----------------------------------------------------------------
def top_per_group(scores: torch.Tensor, counts: torch.Tensor, allowed: torch.Tensor | None = None,
                  first: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (G, M) mask holding, in each row g of ``scores`` (G, M), the ``counts[g]``
    highest-scored ``allowed`` positions, ties to the lower position. Positions in ``first``
    (if given) are taken before every other allowed one. Raises ``ValueError`` when a row has
    fewer allowed positions than its count."""
    g, m = scores.shape
    counts = counts.to(device=scores.device, dtype=torch.long).reshape(g)
    allowed = torch.ones_like(scores, dtype=torch.bool) if allowed is None else allowed.bool()
    if bool((allowed.sum(1) < counts).any()):
        row = int(torch.nonzero(allowed.sum(1) < counts)[0])
        raise ValueError(f"cannot choose {int(counts[row])} positions out of {int(allowed[row].sum())} "
                         f"in group {row}")
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices
    for tier in (first, allowed):  # later sorts win: allowed first, then `first`, then score
        if tier is not None:
            rank = torch.gather(tier.bool(), 1, order).to(torch.uint8)
            order = torch.gather(order, 1, torch.sort(rank, dim=1, descending=True, stable=True).indices)
    taken = torch.arange(m, device=scores.device).expand(g, m) < counts[:, None]
    mask = torch.zeros(g, m, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order, taken)
    return mask


# --- the structures -------------------------------------------------------------------------
class Structure(ABC):
    """How the weights of one logical layer are grouped. Tensors passed to the methods have
    the layer's own shape; ``fan_in_dim`` is its input dimension (`LayerKind.fan_in_dim`)."""

    kind: ClassVar[str]
    """The registry name: unstructured, n:m, block or channel."""

    @property
    @abstractmethod
    def spec(self) -> str:
        """The canonical string, e.g. "2:4" (parse_structure(s.spec) == s)."""

    def __str__(self) -> str:
        return self.spec

    @property
    def unstructured(self) -> bool:
        return False

    def problem(self, shape: Shape, fan_in_dim: int = 1) -> str | None:
        """Why a layer of ``shape`` cannot take this structure (None if it can)."""
        return None

    @abstractmethod
    def group_size(self, shape: Shape, fan_in_dim: int = 1) -> int:
        """Weights per group."""

    def num_groups(self, shape: Shape, fan_in_dim: int = 1) -> int:
        return math.prod(shape) // self.group_size(shape, fan_in_dim)

    def round_count(self, count: int, shape: Shape, fan_in_dim: int = 1) -> int:
        """The active count nearest ``count`` that the structure allows: a whole number of
        groups, at least one unless ``count`` is 0, at most all of them."""
        size = self.group_size(shape, fan_in_dim)
        if count <= 0:
            return 0
        groups = min(self.num_groups(shape, fan_in_dim), max(1, math.floor(count / size + 0.5)))
        return groups * size

    @abstractmethod
    def group_scores(self, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        """One score per group (1-D, groups in row-major order of the grid of groups): the L2
        norm of ``scores`` over the group (a single weight: its score)."""

    @abstractmethod
    def expand(self, groups: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
        """The boolean mask of ``shape`` that is True on every weight of the True ``groups``."""

    @abstractmethod
    def group_counts(self, mask: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        """Active weights in each group of ``mask`` (1-D, in group order)."""

    @abstractmethod
    def group_sums(self, t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        """The sum of ``t`` over each group (1-D, in group order), e.g. a saliency summed per group."""

    def active_groups(self, mask: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        """Per group, True when any of its weights is active."""
        return self.group_counts(mask, fan_in_dim) > 0

    def select(self, scores: torch.Tensor, k: int, fan_in_dim: int = 1,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """The structured mask (``scores``' shape) of ``k`` weights with the highest group
        scores: ``k / group size`` whole groups (a group is allowed when every weight of it is
        in ``allowed``). ``k`` must be a whole number of groups (see `round_count`)."""
        shape = tuple(scores.shape)
        size = self.group_size(shape, fan_in_dim)
        if k % size:
            raise ValueError(f"{k} weights are not a whole number of {self.spec} groups of {size}")
        ok = None
        if allowed is not None:
            ok = self.group_counts(allowed, fan_in_dim) == size
        chosen = topk_mask(self.group_scores(scores, fan_in_dim), k // size, allowed=ok)
        return self.expand(chosen, shape, fan_in_dim)

    def violation(self, mask: torch.Tensor, fan_in_dim: int = 1) -> str | None:
        """What in ``mask`` breaks the structure (None when it holds)."""
        size = self.group_size(tuple(mask.shape), fan_in_dim)
        counts = self.group_counts(mask, fan_in_dim)
        bad = int(((counts != 0) & (counts != size)).sum())
        if bad:
            return f"{bad} of {counts.numel()} {self.spec} groups are partly active"
        return None

    def satisfied(self, mask: torch.Tensor, fan_in_dim: int = 1) -> bool:
        return self.violation(mask, fan_in_dim) is None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Structure) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return f"Structure({self.spec!r})"


STRUCTURES: Registry[Callable[[str | None], Structure]] = Registry("structure")
"""Structure kind -> factory(argument) (the text after "block:", "N:M" for n:m, None)."""

USAGE = ("unstructured, N:M (N of every M consecutive weights along the fan-in, 0 < N < M, e.g. 2:4), "
         "block:B (B x B blocks, e.g. block:4) or channel (whole output channels)")


def parse_structure(spec: str | Structure) -> Structure:
    """The structure named by ``spec`` ("unstructured", "2:4", "block:4", "channel"; case and
    surrounding spaces ignored). Raises `ConfigError` (one sentence) for anything else."""
    if isinstance(spec, Structure):
        return spec
    text = str(spec).strip().lower()
    if re.fullmatch(r"\d+\s*:\s*\d+", text):
        kind, arg = "n:m", text
    else:
        kind, _, arg = text.partition(":")
        arg = arg.strip() or None
    if kind not in STRUCTURES or (kind in ("unstructured", "channel") and arg is not None):
        hint = " (YAML reads an unquoted 2:4 as the number 124: quote it)" if text.isdigit() else ""
        raise ConfigError(f"structure must be {USAGE}; got {spec!r}{hint}")
    return STRUCTURES.get(kind)(arg)


@STRUCTURES.register("unstructured", help="any set of weights (one group per weight)")
class Unstructured(Structure):
    """No structure: every weight is its own group (today's behaviour)."""

    kind: ClassVar[str] = "unstructured"

    def __init__(self, arg: str | None = None) -> None:
        pass

    @property
    def spec(self) -> str:
        return "unstructured"

    @property
    def unstructured(self) -> bool:
        return True

    def group_size(self, shape: Shape, fan_in_dim: int = 1) -> int:
        return 1

    def round_count(self, count: int, shape: Shape, fan_in_dim: int = 1) -> int:
        return max(0, min(count, math.prod(shape)))

    def group_scores(self, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return scores.reshape(-1)

    def expand(self, groups: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
        return groups.reshape(shape).bool()

    def group_counts(self, mask: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return mask.reshape(-1).long()

    def group_sums(self, t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return t.reshape(-1)


@STRUCTURES.register("n:m", help="exactly N of every M consecutive weights along the fan-in (e.g. 2:4)")
class NM(Structure):
    """N:M fine-grained structured sparsity (Zhou et al. 2021, "Learning N:M Fine-grained
    Structured Sparse Neural Networks From Scratch"; NVIDIA Ampere 2:4): in every group of M
    consecutive weights along the fan-in (input channels at one kernel position, see the
    module docstring), exactly N are active. The layer's density is fixed at N/M."""

    kind: ClassVar[str] = "n:m"

    def __init__(self, arg: str | None) -> None:
        n, _, m = (arg or "").partition(":")
        try:
            self.n, self.m = int(n), int(m)
        except ValueError:
            raise ConfigError(f"structure must be {USAGE}; got {arg!r}") from None
        if not 0 < self.n < self.m:
            raise ConfigError(f"structure N:M needs 0 < N < M; got {self.n}:{self.m}")

    @property
    def spec(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m

    def problem(self, shape: Shape, fan_in_dim: int = 1) -> str | None:
        channels = in_channels(shape, fan_in_dim)
        if channels % self.m:
            return f"{channels} input channels are not a multiple of {self.m} for structure {self.spec}"
        return None

    def group_size(self, shape: Shape, fan_in_dim: int = 1) -> int:
        return self.m

    def round_count(self, count: int, shape: Shape, fan_in_dim: int = 1) -> int:
        """Always N/M of the layer: the structure fixes the count."""
        return self.num_groups(shape, fan_in_dim) * self.n

    def groups(self, t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        """``t`` as (groups, M): row g holds the M weights of group g."""
        return matrix(t, fan_in_dim).reshape(-1, self.m)

    def ungroup(self, g: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
        """The inverse of `groups`."""
        return unmatrix(g.reshape(matrix_shape(shape, fan_in_dim)), shape, fan_in_dim)

    def group_scores(self, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return self.groups(scores.float(), fan_in_dim).pow(2).sum(1).sqrt()

    def expand(self, groups: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
        g = groups.reshape(-1, 1).bool().expand(-1, self.m)
        return self.ungroup(g, shape, fan_in_dim)

    def group_counts(self, mask: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return self.groups(mask.bool(), fan_in_dim).sum(1)

    def group_sums(self, t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return self.groups(t, fan_in_dim).sum(1)

    def select(self, scores: torch.Tensor, k: int, fan_in_dim: int = 1,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """The N highest ``scores`` (among ``allowed``) of every group; ``k`` must be N/M of
        the layer."""
        shape = tuple(scores.shape)
        groups = self.num_groups(shape, fan_in_dim)
        if k != groups * self.n:
            raise ValueError(f"structure {self.spec} holds {groups * self.n} weights of this layer; asked {k}")
        counts = torch.full((groups,), self.n, dtype=torch.long)
        chosen = top_per_group(self.groups(scores, fan_in_dim),
                               counts, None if allowed is None else self.groups(allowed, fan_in_dim))
        return self.ungroup(chosen, shape, fan_in_dim)

    def violation(self, mask: torch.Tensor, fan_in_dim: int = 1) -> str | None:
        counts = self.group_counts(mask, fan_in_dim)
        bad = int((counts != self.n).sum())
        if bad:
            return f"{bad} of {counts.numel()} groups of {self.m} do not hold exactly {self.n} active weights"
        return None


@STRUCTURES.register("block", help="B x B blocks of the (out, fan-in) matrix (e.g. block:4)")
class Block(Structure):
    """B x B blocks of the (out, fan-in) matrix (block sparsity as in Gray et al. 2017's
    block-sparse GPU kernels), all active or all inactive, ranked by the L2 norm of their
    scores."""

    kind: ClassVar[str] = "block"

    def __init__(self, arg: str | None) -> None:
        try:
            self.b = int(arg or "")
        except ValueError:
            raise ConfigError(f"structure must be {USAGE}; got 'block:{arg or ''}'") from None
        if self.b < 1:
            raise ConfigError(f"structure block:B needs B >= 1; got block:{self.b}")

    @property
    def spec(self) -> str:
        return f"block:{self.b}"

    def problem(self, shape: Shape, fan_in_dim: int = 1) -> str | None:
        rows, cols = matrix_shape(shape, fan_in_dim)
        if rows % self.b or cols % self.b:
            return f"its ({rows}, {cols}) (out, fan-in) matrix is not a whole number of {self.b}x{self.b} blocks"
        return None

    def group_size(self, shape: Shape, fan_in_dim: int = 1) -> int:
        return self.b * self.b

    def _grid(self, t: torch.Tensor, fan_in_dim: int) -> torch.Tensor:
        """``t`` as (row blocks, B, column blocks, B)."""
        rows, cols = matrix_shape(tuple(t.shape), fan_in_dim)
        return matrix(t, fan_in_dim).reshape(rows // self.b, self.b, cols // self.b, self.b)

    def group_scores(self, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return self._grid(scores.float(), fan_in_dim).pow(2).sum((1, 3)).sqrt().reshape(-1)

    def expand(self, groups: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
        rows, cols = matrix_shape(shape, fan_in_dim)
        grid = groups.bool().reshape(rows // self.b, 1, cols // self.b, 1)
        return unmatrix(grid.expand(-1, self.b, -1, self.b).reshape(rows, cols), shape, fan_in_dim)

    def group_counts(self, mask: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return self._grid(mask.bool(), fan_in_dim).sum((1, 3)).reshape(-1)

    def group_sums(self, t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return self._grid(t, fan_in_dim).sum((1, 3)).reshape(-1)


@STRUCTURES.register("channel", help="whole output channels (a Linear's output unit, a Conv's filter)")
class Channel(Structure):
    """Whole output channels: a row of the (out, fan-in) matrix, i.e. one output unit of a
    Linear or one filter of a Conv, ranked by the L2 norm of its scores."""

    kind: ClassVar[str] = "channel"

    def __init__(self, arg: str | None = None) -> None:
        pass

    @property
    def spec(self) -> str:
        return "channel"

    def group_size(self, shape: Shape, fan_in_dim: int = 1) -> int:
        return matrix_shape(shape, fan_in_dim)[1]

    def group_scores(self, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return matrix(scores.float(), fan_in_dim).pow(2).sum(1).sqrt()

    def expand(self, groups: torch.Tensor, shape: Shape, fan_in_dim: int = 1) -> torch.Tensor:
        rows, cols = matrix_shape(shape, fan_in_dim)
        return unmatrix(groups.bool().reshape(rows, 1).expand(rows, cols), shape, fan_in_dim)

    def group_counts(self, mask: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return matrix(mask.bool(), fan_in_dim).sum(1)

    def group_sums(self, t: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
        return matrix(t, fan_in_dim).sum(1)


# --- layers of a model --------------------------------------------------------------------
def fit_selection(selection: Selection, structure: Structure) -> Selection:
    """``selection`` with every chosen weight whose logical layers cannot take ``structure``
    moved to the dense ones, with the reason (e.g. a first Conv with 3 input channels under
    2:4). Raises `ConfigError` when no weight is left."""
    chosen, dense = [], dict(selection.dense)
    for c in selection.chosen:
        why = structure.problem(c.logical_shape, 1) if len(c.shape) >= 2 else \
            f"a {len(c.shape)}-D weight has no (out, fan-in) matrix"
        if why is None:
            chosen.append(c)
        else:
            dense[c.name] = f"{why}; kept dense"
    if not chosen:
        reasons = "; ".join(f"{n}: {dense[n]}" for n in dense)
        raise ConfigError(f"structure {structure.spec}: no sparsifiable weight fits it ({reasons})")
    return Selection(chosen, dense)
