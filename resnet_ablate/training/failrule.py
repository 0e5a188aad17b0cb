"""When a finished run is `fail`: the rule depends on whether it trained its recipe's whole schedule.

The 2016 paper calls a run that ends above 20 % test error a failure (`fail_threshold`), for its full
64k-iteration schedule. A run that trains fewer iterations than its schedule (a CPU prefix, a quick budget)
cannot reach that error and is not a failure for missing it: under the `reduced` rule it fails only when its
loss is not finite or its final test error is at chance, i.e. at least 88 % on a 10-class set (chance 90 %),
scaled by the class count (88/90 of chance), and above `fail_threshold` (so `fail_threshold=100`, "never
fail for an error", holds under both rules). result.json records the rule applied (`fail_rule`); the report
derives it the same way for older records, which lack it.
"""
from __future__ import annotations

from typing import Any, Mapping

from .recipes import RECIPES, train_images

PAPER, REDUCED = "paper", "reduced"
CHANCE_FRACTION = 88 / 90  # of chance error: 88 % on 10 classes


def full_iterations(settings: Mapping[str, Any], default: int) -> int:
    """The iterations of a run's whole schedule: what its recipe gives for its depth, batch and data, else
    `default` (the config key's, for `recipe=default` and data whose size is known only when loaded)."""
    recipe = RECIPES.get(settings.get("recipe", "default"), RECIPES["default"])
    images = train_images(settings["dataset"], settings.get("val_split", 0), settings.get("synthetic_size", 0))
    values = recipe.resolve(settings["depth"], settings["batch_size"], images, settings.get("unit", "original"))
    return int(values.get("iterations", default))


def fail_rule(settings: Mapping[str, Any], default_iterations: int) -> str:
    """`paper` for a run of its whole schedule (or longer), `reduced` for fewer iterations."""
    return PAPER if settings["iterations"] >= full_iterations(settings, default_iterations) else REDUCED


def chance_error(classes: int) -> float:
    """The final test error (%) at which a reduced run counts as at chance."""
    return round(100 * CHANCE_FRACTION * (1 - 1 / classes), 2)


def failure(rule: str, final_error: float, fail_threshold: float, classes: int) -> str:
    """Why a run that ended with a finite loss and `final_error` fails under `rule` ('' when it does not)."""
    if rule == PAPER and final_error > fail_threshold:
        return f"final test error {final_error:.2f}% is above fail_threshold {fail_threshold}%"
    if rule == REDUCED and final_error >= chance_error(classes) and final_error > fail_threshold:
        return (f"final test error {final_error:.2f}% is at chance (>= {chance_error(classes)}% on {classes} "
                f"classes) after a reduced schedule")
    return ""


CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}  # a folder's classes are known only when loaded


def judged(result: Mapping[str, Any], settings: Mapping[str, Any], default_iterations: int) -> dict[str, Any]:
    """A finished run's result.json as this rule judges it: a record with `fail_rule` as written; an older one
    (it lacks the key, and was judged by the paper's rule) as written where that is its rule, else (reduced)
    with its status and reason derived from its final error, unless it diverged (a reason of its own) or its
    data's class count is unknown. The folder is never edited."""
    if "fail_rule" in result:
        return dict(result)
    error, rule = result.get("final_test_error"), fail_rule(settings, default_iterations)
    judged_by_error = result["status"] == "done" or str(result.get("reason", "")).startswith("final test error")
    if rule == PAPER or not judged_by_error or not isinstance(error, (int, float)) or \
            settings.get("dataset") not in CLASSES:
        return {**result, "fail_rule": rule}
    reason = failure(rule, error, settings.get("fail_threshold", 20.0), CLASSES[settings["dataset"]])
    return {**result, "status": "fail" if reason else "done", "reason": reason, "fail_rule": rule}
