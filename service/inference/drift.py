"""Drift metrics per model and version: what the traffic gets answered, and how reviewers judge it.

Compared with the version's own validation numbers these show drift over time (Prometheus keeps the
series): predictions per class (the top class), the confidence distribution (top probability), the
unknown share (``tuneserve_predictions_unknown_total`` / ``tuneserve_images_predicted_total``) and the
live accuracy on reviewed captures (``agree`` / (``agree`` + ``disagree``); ``none_of_these`` apart).
Labels are bounded: a model's classes, its versions, two reasons, three outcomes.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from service.inference.predictor import Answer

PREDICTED_CLASS = Counter("tuneserve_predictions_by_class_total", "Predictions by their top class",
                          ["model", "version", "label"])
CONFIDENCE = Histogram("tuneserve_prediction_confidence", "Top probability of each prediction",
                       ["model", "version"], buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0))
UNKNOWN = Counter("tuneserve_predictions_unknown_total", "Predictions answered unknown, by reason",
                  ["model", "version", "reason"])
REVIEWS = Counter("tuneserve_feedback_reviews_total",
                  "Captures reviewed for the first time, by whether the label agrees with the model's top class",
                  ["model", "version", "outcome"])


def observe(answer: Answer) -> None:
    version = str(answer.version)
    for r in answer.results:
        if not r.predictions:
            continue
        label, _, probability = r.predictions[0]
        PREDICTED_CLASS.labels(answer.model, version, label).inc()
        CONFIDENCE.labels(answer.model, version).observe(probability)
        if r.unknown_reason is not None:
            UNKNOWN.labels(answer.model, version, r.unknown_reason).inc()


def review_outcome(label: str | None, predicted: str | None) -> str:
    if label is None:
        return "none_of_these"
    return "agree" if label == predicted else "disagree"


def observe_review(model: str, version: int | None, label: str | None, predicted: str | None) -> None:
    REVIEWS.labels(model, str(version), review_outcome(label, predicted)).inc()
