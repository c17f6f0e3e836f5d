"""Semantic clustering of image–text embeddings for federated partitions (Fed-CMP App. E).

Fed-CMP (Appendix E.2) partitions CC12M into one cluster per client with a clustering that
"groups samples based on cosine similarity" of SigLIP embeddings under four similarity
measures, Eqs. (20)–(23), and then "prune[s] samples distant from the cluster centroids to cap
each cluster at a maximum" size. The displayed equations did not survive the extraction of our
copy of the paper; they are rebuilt from the prose (see docs/ARCHITECTURE.md). With unit image
embeddings v_i and text embeddings t_i, the similarity of samples i and j is

* ``image`` (Eq. 20):  s(i, j) = v_i·v_j
* ``text``  (Eq. 21):  s(i, j) = t_i·t_j
* ``joint`` (Eq. 22):  s(i, j) = (v_i·v_j + t_i·t_j) / 2          ("both intra-modal similarities")
* ``cross`` (Eq. 23):  s(i, j) = (v_i·t_j + t_i·v_j) / 2          (image–text similarity, symmetrised)

Every mode is written as s(i, j) = x_i·y_j with per-sample vectors x (the sample as a query) and
y (the sample as a cluster member): x = y = v, x = y = t, x = y = [v, t]/√2, and for ``cross``
x = [v, t]/√2, y = [t, v]/√2. The clustering is spherical k-means (Dhillon & Modha 2001) in that
form: a cluster's centroid is m_c = normalise(Σ_{j∈c} y_j), a sample's score for cluster c is
x_i·m_c (its cosine similarity to the centroid; the cosine distance is 1 − score), samples go
to their best-scoring cluster, and centroids are recomputed until nothing moves. The first three
modes are exactly spherical k-means on x; for ``cross`` the same iteration maximises the mean
cross-modal similarity of a sample to its cluster's members. Initialisation is k-means++
(Arthur & Vassilvitskii 2007) on the cosine distance, with a few seeded restarts, keeping the
restart with the largest total score.

Centring (``center``, on by default, our addition): before normalising, each modality's mean
training embedding is subtracted. CLIP-style embeddings of one modality lie in a narrow cone, and
the two modalities in different cones (the "modality gap", Liang et al. 2022), so raw cosine
similarities share a large constant part; for ``cross`` it dominates and one cluster absorbs
nearly every sample. Centring removes it and leaves the similarities' variation; the held-out
splits are shifted by the same training means.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

MODES: tuple[str, ...] = ("image", "text", "joint", "cross")
MAX_ITERATIONS = 100
RESTARTS = 4
_EPS = 1e-12


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def mode_vectors(image: np.ndarray, text: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) with s(i, j) = x_i·y_j the similarity of ``mode`` (module docstring), rows unit-norm."""
    if mode not in MODES:
        raise ValueError(f"clustering mode must be one of {MODES}, got {mode!r}")
    image, text = np.asarray(image), np.asarray(text)
    if image.shape[0] != text.shape[0]:
        raise ValueError(f"image and text embeddings differ in sample count: {image.shape[0]} vs {text.shape[0]}")
    v, t = l2_normalise(image), l2_normalise(text)
    if mode == "image":
        return v, v
    if mode == "text":
        return t, t
    joint = np.concatenate([v, t], axis=1) / np.sqrt(2.0)
    if mode == "joint":
        return joint, joint
    if v.shape[1] != t.shape[1]:
        raise ValueError(f"cross-modal clustering needs image and text embeddings of one width, got {v.shape[1]} and {t.shape[1]}")
    return joint, np.concatenate([t, v], axis=1) / np.sqrt(2.0)


def centroids(y: np.ndarray, assignment: np.ndarray, k: int) -> np.ndarray:
    """Unit centroids m_c = normalise(Σ_{j: assignment_j = c} y_j), shape (k, d)."""
    sums = np.zeros((k, y.shape[1]))
    np.add.at(sums, assignment, y)
    return l2_normalise(sums)


def _kmeans_pp(x: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Initial centroids: k-means++ seeding on the cosine distance 1 − x_i·y_j."""
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    closest = np.clip(1.0 - x @ y[chosen[0]], 0.0, None)
    for _ in range(1, k):
        weights = closest**2
        weights[chosen] = 0.0
        total = weights.sum()
        if total > 0:
            pick = int(rng.choice(n, p=weights / total))
        else:  # every sample coincides with a centre already: take any other sample
            pick = int(rng.choice(np.setdiff1d(np.arange(n), chosen)))
        chosen.append(pick)
        closest = np.minimum(closest, np.clip(1.0 - x @ y[pick], 0.0, None))
    return l2_normalise(y[chosen])


def _fill_empty(assignment: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Give every empty cluster the sample that fits its own cluster worst (standard k-means repair)."""
    assignment = assignment.copy()
    own = scores[np.arange(len(assignment)), assignment]
    for c in range(k):
        if np.any(assignment == c):
            continue
        sizes = np.bincount(assignment, minlength=k)
        movable = np.flatnonzero(sizes[assignment] > 1)
        worst = movable[np.argmin(own[movable])]
        assignment[worst] = c
        own[worst] = np.inf
    return assignment


def _lloyd(x: np.ndarray, y: np.ndarray, initial: np.ndarray, max_iterations: int) -> tuple[np.ndarray, np.ndarray, float]:
    k = initial.shape[0]
    means = initial
    assignment = np.full(x.shape[0], -1)
    for _ in range(max_iterations):
        scores = x @ means.T
        new = _fill_empty(np.argmax(scores, axis=1), scores, k)
        if np.array_equal(new, assignment):
            break
        assignment = new
        means = centroids(y, assignment, k)
    objective = float(np.sum((x @ means.T)[np.arange(x.shape[0]), assignment]))
    return assignment, means, objective


@dataclass(frozen=True)
class Clustering:
    """A clustering of n samples into k clusters.

    ``assignment[i]`` is sample i's cluster (−1: pruned by the size cap), ``centroids`` the
    (k, d) unit centroids, ``scores[i]`` sample i's score x_i·m_c for its own cluster (before
    pruning), ``mode`` the similarity the clustering used, and ``image_mean`` / ``text_mean``
    the shifts subtracted before normalising (zero without centring).
    """

    assignment: np.ndarray
    centroids: np.ndarray
    scores: np.ndarray
    mode: str
    image_mean: np.ndarray
    text_mean: np.ndarray

    @property
    def pruned(self) -> int:
        return int(np.sum(self.assignment < 0))


def spherical_kmeans(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    seed: int,
    restarts: int = RESTARTS,
    max_iterations: int = MAX_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """(assignment, unit centroids) of the best of ``restarts`` seeded k-means++ / Lloyd runs."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= samples, got k={k} for {n} samples")
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for restart in np.random.SeedSequence([seed, zlib.crc32(b"kmeans")]).spawn(restarts):
        rng = np.random.default_rng(restart)
        result = _lloyd(x, y, _kmeans_pp(x, y, k, rng), max_iterations)
        # Strictly greater: ties keep the earlier restart, so the result is a pure function of the seed.
        if best is None or result[2] > best[2]:
            best = result
    return best[0], best[1]


def cap_clusters(assignment: np.ndarray, scores: np.ndarray, cap: int | None) -> np.ndarray:
    """Prune every cluster to its ``cap`` samples nearest its centroid (highest score); pruned → −1.

    Fed-CMP App. E.2: "we prune samples distant from the cluster centroids to cap each cluster".
    Ties in score keep the lower sample index.
    """
    if cap is None:
        return assignment.copy()
    if cap < 1:
        raise ValueError(f"cluster size cap must be at least 1, got {cap}")
    capped = assignment.copy()
    for c in np.unique(assignment[assignment >= 0]):
        members = np.flatnonzero(assignment == c)
        if len(members) > cap:
            order = members[np.lexsort((members, -scores[members]))]
            capped[order[cap:]] = -1
    return capped


def modality_means(image: np.ndarray, text: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """The per-modality mean embeddings that centring subtracts (zeros when ``center`` is false)."""
    image, text = np.asarray(image, dtype=np.float64), np.asarray(text, dtype=np.float64)
    if not center or image.shape[0] == 0:
        return np.zeros(image.shape[1]), np.zeros(text.shape[1])
    return image.mean(axis=0), text.mean(axis=0)


def cluster(
    image: np.ndarray,
    text: np.ndarray,
    mode: str,
    k: int,
    seed: int,
    cap: int | None = None,
    center: bool = True,
) -> Clustering:
    """Cluster samples into ``k`` clusters under ``mode`` and cap each at ``cap`` samples."""
    image_mean, text_mean = modality_means(image, text, center)
    x, y = mode_vectors(np.asarray(image) - image_mean, np.asarray(text) - text_mean, mode)
    assignment, means = spherical_kmeans(x, y, k, seed)
    scores = (x @ means.T)[np.arange(x.shape[0]), assignment]
    return Clustering(cap_clusters(assignment, scores, cap), means, scores, mode, image_mean, text_mean)


def nearest_centroid(image: np.ndarray, text: np.ndarray, clustering: Clustering) -> np.ndarray:
    """The best-scoring cluster of each sample (used for the held-out splits; nothing is pruned)."""
    if np.asarray(image).shape[0] == 0:
        return np.zeros(0, dtype=int)
    x, _ = mode_vectors(
        np.asarray(image) - clustering.image_mean, np.asarray(text) - clustering.text_mean, clustering.mode
    )
    return np.argmax(x @ clustering.centroids.T, axis=1)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal components of ``points`` (n, d) via the SVD of the centred data.

    Each axis's sign is fixed so that its largest-magnitude loading is positive, which makes the
    projection a deterministic function of the data. Missing components (n < 2 or d < 2) are 0.
    """
    points = np.asarray(points, dtype=np.float64)
    out = np.zeros((points.shape[0], 2))
    if points.shape[0] < 2:
        return out
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    out[:, : len(axes)] = centred @ axes.T
    return out
