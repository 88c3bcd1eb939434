"""Accuracy and F1 from a confusion matrix (rows: gold label, columns: predicted label)."""

from __future__ import annotations

from collections.abc import Sequence

Matrix = list[list[int]]


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Matrix:
    """Count `matrix[i][j]`: items of gold label `labels[i]` predicted as `labels[j]`."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g]][index[p]] += 1
    return matrix


def accuracy(matrix: Matrix) -> float:
    """Correct items over all items (0.0 for no items)."""
    total = sum(map(sum, matrix))
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0


def f1(matrix: Matrix, k: int) -> float:
    """F1 of class `k`: 2TP / (2TP + FP + FN), 0.0 when the class is neither gold nor predicted."""
    tp = matrix[k][k]
    fn = sum(matrix[k]) - tp
    fp = sum(row[k] for row in matrix) - tp
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def macro_f1(matrix: Matrix) -> float:
    """Mean F1 over the classes that occur as gold or predicted labels (as scikit-learn averages)."""
    present = [k for k in range(len(matrix)) if sum(matrix[k]) or sum(row[k] for row in matrix)]
    return sum(f1(matrix, k) for k in present) / len(present) if present else 0.0
