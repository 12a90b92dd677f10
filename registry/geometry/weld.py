"""Welding: coincident corners become one vertex, and the grouping of equal rows behind it.

STL gives every triangle its own three corners; ``weld`` snaps them to a grid of
``Tolerances.merge`` mm and numbers the occupied cells. Grouping equal rows is the costly step
of the whole mesh check, so it avoids a comparison sort (numpy sorts 64-bit integers at about
60 ns each here, whatever the kind):

- the three cell numbers are packed into one integer code of ``b`` bits (their widths), spread
  by a multiplication modulo ``2**b`` (a bijection: equal codes are equal rows, and the top bits
  depend on every bit of the row); rows too wide to pack get a 64-bit hash instead;
- the top bits of the code pick one of about N/16 buckets, and scipy's CSR-to-CSC conversion
  puts the rows in bucket order, a counting sort in C that is linear in N;
- scipy's ``sort_indices`` then sorts each bucket's handful of rows by the rest of the code.

Equal codes end up next to each other, about four times faster than ``np.sort`` on the same
codes; the groups are then numbered in the order of their first rows, so that the corners of
neighbouring triangles get nearby vertex numbers (the steps that follow look vertices up far
faster when neighbours sit close together in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import csr_array

if TYPE_CHECKING:
    from registry.geometry.checks import Tolerances

# Rows handled at once by the chunked loops: their temporaries stay in the CPU cache.
CHUNK = 1 << 16

_U64 = np.uint64
_MIX = _U64(0xBF58476D1CE4E5B9)
_ROW_PRIMES = (_U64(0x9E3779B97F4A7C15), _U64(0xC2B2AE3D27D4EB4F), _U64(0x165667B19E3779F9))
# Odd, so that multiplying by it modulo 2**b is a bijection (Fibonacci hashing: 2**64 / phi).
_SPREAD = _U64(0x9E3779B97F4A7C15)
# Rows per bucket of the counting sort, as a power of two: a few rows keep the per-bucket sorts
# trivial, more buckets cost their share of the bucket array.
_BUCKET_ROWS_BITS = 4

# ``column(axis, rows)``: the exact int64 values of one column of the rows being grouped, for
# the rows ``rows`` selects (a slice or an index array).
Column = Callable[[int, slice | np.ndarray], np.ndarray]


def _mix(code: np.ndarray) -> np.ndarray:
    """Scramble (k,) uint64 in place so that the top bits depend on every bit; a bijection."""
    code ^= code >> _U64(31)
    code *= _MIX
    code ^= code >> _U64(29)
    return code


def _packed(column: Column, rows: slice, widths: list[int], check: bool) -> np.ndarray | None:
    """(k,) uint64: the rows packed into ``sum(widths)`` bits, spread; None when ``check``
    finds a value that does not fit its width (or is negative)."""
    code = np.zeros(rows.stop - rows.start, np.uint64)
    for axis in range(3):
        values = column(axis, rows)
        if check and values.shape[0] and (values.min() < 0 or values.max() >> widths[axis]):
            return None
        code <<= _U64(widths[axis])
        code |= values.view(np.uint64)
    code *= _SPREAD
    return code


def _hashed(column: Column, rows: slice | np.ndarray) -> np.ndarray:
    """(k,) uint64 hashes of the rows (equal rows, equal hashes; the converse is checked)."""
    code = column(0, rows).view(np.uint64).copy()
    for axis in (1, 2):
        code *= _ROW_PRIMES[axis]
        code += column(axis, rows).view(np.uint64)
    return _mix(code)


def _bucket_bits(count: int, bits: int) -> int:
    """Bits of a code that pick its bucket: about 2**_BUCKET_ROWS_BITS rows per bucket, and
    the rest of a code (a column index, and the number of columns) must fit int64."""
    return min(bits, max(bits - 62, count.bit_length() - _BUCKET_ROWS_BITS, 0))


@dataclass
class _Buckets:
    """Codes of ``bits`` bits split into their top ``bucket_bits`` (``bucket``, int32 unless
    there are 2**31 rows) and the rest (``rest``, int32 when it fits, else int64)."""

    bits: int
    bucket: np.ndarray
    rest: np.ndarray

    @classmethod
    def empty(cls, count: int, bits: int) -> _Buckets:
        rest_type = np.int32 if bits - _bucket_bits(count, bits) < 32 else np.int64
        index_type = np.int32 if count < 2**31 else np.int64
        return cls(bits, np.empty(count, index_type), np.empty(count, rest_type))

    @property
    def bucket_bits(self) -> int:
        return _bucket_bits(self.bucket.shape[0], self.bits)

    def fill(self, rows: slice, code: np.ndarray) -> None:
        """Store the (k,) uint64 ``code`` of ``rows`` (its high bits past ``bits`` ignored)."""
        rest_bits = self.bits - self.bucket_bits
        if self.bits < 64:
            code &= _U64((1 << self.bits) - 1)
        np.right_shift(code, _U64(rest_bits), out=self.bucket[rows], casting="unsafe")
        code &= _U64((1 << rest_bits) - 1)
        self.rest[rows] = code


def _bucketed(
    count: int, column: Column, widths: list[int] | None, check: bool
) -> tuple[_Buckets, bool]:
    """The rows' codes, split for ``_group``, and whether they are exact (equal codes are equal
    rows) rather than hashes."""
    if widths is not None and sum(widths) <= 64:
        buckets = _Buckets.empty(count, sum(widths))
        for start in range(0, count, CHUNK):
            rows = slice(start, min(start + CHUNK, count))
            code = _packed(column, rows, widths, check)
            if code is None:
                break
            buckets.fill(rows, code)
        else:
            return buckets, True
    buckets = _Buckets.empty(count, 64)
    for start in range(0, count, CHUNK):
        rows = slice(start, min(start + CHUNK, count))
        buckets.fill(rows, _hashed(column, rows))
    return buckets, False


def _group(buckets: _Buckets) -> tuple[np.ndarray, np.ndarray]:
    """Number equal codes alike: ``group`` (k,) int32 (int64 past 2**31 rows), each code's
    group numbered in the order of the groups' first rows, and ``first`` (g,) of the same type,
    the first row of each group, ascending. ``buckets`` is emptied."""
    count = buckets.bucket.shape[0]
    index_type = buckets.bucket.dtype
    if count == 0:
        return np.zeros(0, index_type), np.zeros(0, index_type)
    bucket_bits = buckets.bucket_bits
    # one row per code, its bucket as the column: the CSC form lists each bucket's rows
    by_bucket = csr_array(
        (buckets.rest, buckets.bucket, np.arange(count + 1, dtype=index_type)),
        shape=(count, 1 << bucket_bits),
    ).tocsc()
    buckets.bucket = buckets.rest = np.zeros(0, index_type)
    # each bucket a row, the rest of the code a column index: sorting the indices sorts codes
    ordered = csr_array(
        (by_bucket.indices, by_bucket.data, by_bucket.indptr),
        shape=(1 << bucket_bits, 1 << (buckets.bits - bucket_bits)),
    )
    del by_bucket
    ordered.has_sorted_indices = False
    ordered.sort_indices()
    order, sorted_rest, bucket_start = ordered.data, ordered.indices, ordered.indptr
    del ordered
    run_start = np.empty(count, bool)
    run_start[0] = True
    np.not_equal(sorted_rest[1:], sorted_rest[:-1], out=run_start[1:])
    del sorted_rest
    bucket_start = bucket_start[1:-1]
    run_start[bucket_start[bucket_start < count]] = True
    del bucket_start
    starts = np.flatnonzero(run_start)
    del run_start
    # rows of one code are in no particular order within their run: the smallest comes first
    first_of_run = np.minimum.reduceat(order, starts)
    is_first = np.zeros(count, bool)
    is_first[first_of_run] = True
    number = np.cumsum(is_first, dtype=index_type)
    number -= 1
    run_number = np.take(number, first_of_run)
    del number, first_of_run
    lengths = np.diff(starts, append=count)
    del starts
    group = np.empty(count, index_type)
    group[order] = np.repeat(run_number, lengths)
    return group, np.flatnonzero(is_first).astype(index_type)


def group_rows(
    count: int, column: Column, widths: list[int] | None, *, check: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Number equal rows alike.

    ``column`` gives the ``count`` rows, three int64 columns; ``widths`` are the bits each
    column needs when the three fit in 64 bits together (then a row's code is the row itself),
    or None (then the code is a hash and equal codes are checked against the rows). Rows that
    do not fit the widths they were given are hashed too; ``check=False`` skips looking, for
    callers whose widths come from the rows' bounds.
    Returns ``group`` (count,) int32 (int64 past 2**31 rows), each row's group numbered in the
    order of the groups' first rows, and ``first`` (g,), the first row of each group.
    """
    buckets, exact = _bucketed(count, column, widths, check)
    group, first = _group(buckets)
    if exact:
        return group, first
    # every row must equal its group's first row
    differs = np.zeros(count, bool)
    for axis in range(3):
        first_value = column(axis, first)
        for start in range(0, count, CHUNK):
            rows = slice(start, start + CHUNK)
            differs[rows] |= np.take(first_value, group[rows]) != column(axis, rows)
    if differs.any():
        index_type = group.dtype
        group, first = _number_by_first_row(*_split_groups(group, differs, column))
        group, first = group.astype(index_type), first.astype(index_type)
    return group, first


def _number_by_first_row(group: np.ndarray, first: np.ndarray):
    """Renumber groups in the order of their first rows."""
    new_number = np.empty(first.shape[0], group.dtype)
    order = np.argsort(first)
    new_number[order] = np.arange(first.shape[0])
    return np.take(new_number, group), first[order]


def _split_groups(group: np.ndarray, differs: np.ndarray, column: Column):
    """Regroup, by the rows themselves, every row of a group that holds different rows."""
    group = group.astype(np.int64)
    rows = np.flatnonzero(np.isin(group, group[differs]))
    exact_rows = np.stack([column(axis, rows) for axis in range(3)], axis=1)
    _, sub_group = np.unique(exact_rows, axis=0, return_inverse=True)
    group[rows] = int(group.max()) + 1 + sub_group.ravel()
    # renumber 0..g-1 (the split groups' old numbers are gone)
    present = np.zeros(int(group.max()) + 1, bool)
    present[group] = True
    group = (np.cumsum(present) - 1)[group]
    first = np.full(int(np.count_nonzero(present)), group.shape[0], np.int64)
    np.minimum.at(first, group, np.arange(group.shape[0]))
    return group, first


def cells(values: np.ndarray, scale: float, origin: int) -> np.ndarray:
    """(k,) int64: the grid cells of coordinates ``values`` (k,) along one axis (float32
    coordinates are scaled in float64: the grid is finer than float32 resolves)."""
    values = np.multiply(values, scale, dtype=np.float64)
    np.rint(values, out=values)
    cell = values.astype(np.int64)
    cell -= origin
    return cell


def bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3,) minimum and (3,) maximum of ``points`` (n, 3). NaN in a column makes both of its
    bounds NaN.

    ``points.min(axis=0)`` walks rows of three; the rows are instead read as rows of 256 points,
    reduced element-wise (contiguous, vectorised), and the 256 left reduced at the end.
    """
    width = 256
    whole = points.shape[0] // width * width
    if not points.flags.c_contiguous or whole == 0:
        low = np.array([points[:, axis].min() for axis in range(3)])
        high = np.array([points[:, axis].max() for axis in range(3)])
        return low, high
    block = points[:whole].reshape(-1, 3 * width)
    low = np.minimum.reduce(block, axis=0).reshape(width, 3).min(axis=0)
    high = np.maximum.reduce(block, axis=0).reshape(width, 3).max(axis=0)
    if whole < points.shape[0]:
        tail = points[whole:]
        low = np.minimum(low, tail.min(axis=0))
        high = np.maximum(high, tail.max(axis=0))
    return low, high


def corners_unshared(faces: np.ndarray, vertex_count: int) -> bool:
    """Whether face i uses vertices 3i, 3i+1, 3i+2 (as the STL readers give them)."""
    if faces.shape[0] == 0 or faces.shape[0] * 3 != vertex_count:
        return False
    if faces[-1, -1] != vertex_count - 1:
        return False
    flat = faces.reshape(-1)
    for start in range(0, flat.shape[0], CHUNK):
        part = flat[start : start + CHUNK]
        if not np.array_equal(part, np.arange(start, start + part.shape[0])):
            return False
    return True


def weld(vertices: np.ndarray, faces: np.ndarray, tol: Tolerances) -> tuple[np.ndarray, np.ndarray]:
    """Merge corners that fall in the same cell of a grid of ``tol.merge`` mm.

    vertices : (n, 3) float, finite; faces : (m, 3) int.
    Returns ``unique_vertices`` (u, 3), of the vertices' type — only vertices some face uses —
    and ``faces`` (m, 3) int32 indexing them (int64 past 2**31 vertices, which halves the
    memory the later checks need).
    """
    if faces.shape[0] == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    unshared = corners_unshared(faces, vertices.shape[0])
    kept = None  # every vertex is used
    if not unshared:
        used = np.zeros(vertices.shape[0], bool)
        used[faces.ravel()] = True
        kept = None if used.all() else np.flatnonzero(used)
        del used
    corners = vertices if kept is None else np.take(vertices, kept, axis=0)
    # the grid widens for coordinates so large that tol.merge would overflow 64-bit integers
    low, high = bounds(corners)
    step = max(tol.merge, float(np.abs([low, high]).max()) * 2.0**-60)
    scale = 1.0 / step
    origin = np.rint(low * scale).astype(np.int64)
    widths = [int(w).bit_length() for w in np.rint(high * scale).astype(np.int64) - origin]

    def snapped(axis: int, rows: slice | np.ndarray) -> np.ndarray:
        values = corners[rows, axis] if isinstance(rows, slice) else corners[:, axis][rows]
        return cells(values, scale, origin[axis])

    # when the three cell numbers fit in 64 bits, a row's code is the row itself
    group, first = group_rows(
        corners.shape[0], snapped, widths if sum(widths) <= 64 else None, check=False
    )
    unique_vertices = np.take(corners, first, axis=0)
    index_type = np.int32 if unique_vertices.shape[0] < 2**31 else np.int64
    group = group.astype(index_type, copy=False)
    if unshared:
        return unique_vertices, group.reshape(-1, 3)
    if kept is not None:
        remap = np.empty(vertices.shape[0], index_type)
        remap[kept] = group
        group = remap
    return unique_vertices, np.take(group, faces)
