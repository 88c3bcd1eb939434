"""Metrics on confusion matrices computed by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kogpt.evaluate.metrics import accuracy, confusion_matrix, f1, macro_f1


def test_confusion_matrix_rows_are_gold_columns_are_predictions():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "b", "a", "b", "c", "c"]
    assert confusion_matrix(gold, pred, ["a", "b", "c"]) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_binary_by_hand():
    # gold 1: 6 items, 4 found (TP 4, FN 2); gold 0: 4 items, 1 called 1 (FP 1), 3 right (TN 3).
    matrix = [[3, 1], [2, 4]]
    assert accuracy(matrix) == pytest.approx(7 / 10)
    assert f1(matrix, 1) == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))  # 8/11
    assert f1(matrix, 0) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # 6/9
    assert macro_f1(matrix) == pytest.approx((8 / 11 + 6 / 9) / 2)


def test_three_classes_by_hand():
    matrix = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # a: TP 2 FP 0 FN 1 -> 4/5; b: TP 1 FP 1 FN 1 -> 2/4; c: TP 1 FP 1 FN 0 -> 2/3.
    assert f1(matrix, 0) == pytest.approx(0.8)
    assert f1(matrix, 1) == pytest.approx(0.5)
    assert f1(matrix, 2) == pytest.approx(2 / 3)
    assert macro_f1(matrix) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert accuracy(matrix) == pytest.approx(4 / 6)


def test_macro_f1_skips_labels_neither_gold_nor_predicted():
    # the third class never occurs: macro-F1 averages over the two that do, as scikit-learn does.
    matrix = [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_a_class_predicted_but_never_gold_counts_as_zero():
    matrix = [[1, 1], [0, 0]]  # class 1 is predicted once and never gold: F1 0
    assert f1(matrix, 1) == 0.0
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 0) / 2)


def test_empty():
    assert accuracy([[0, 0], [0, 0]]) == 0.0
    assert macro_f1([[0, 0], [0, 0]]) == 0.0


@given(st.lists(st.tuples(st.sampled_from("xyz"), st.sampled_from("xyz")), min_size=1))
def test_perfect_and_counted(pairs):
    gold = [g for g, _ in pairs]
    pred = [p for _, p in pairs]
    matrix = confusion_matrix(gold, pred, list("xyz"))
    assert sum(map(sum, matrix)) == len(pairs)
    assert accuracy(matrix) == pytest.approx(sum(g == p for g, p in pairs) / len(pairs))
    assert macro_f1(confusion_matrix(gold, gold, list("xyz"))) == 1.0
