"""values.py: one formatter per purpose. --help's `key=DEFAULT` is what one types (it parses back), a report
writes floats %g and lists ','-joined (the committed reports' form), a table statistic says fail."""
import math

from resnet_ablate.training.config import defaults, fields
from resnet_ablate.training.parse import parse
from resnet_ablate.values import name_token, override_text, report_text, statistic


def test_every_default_as_help_shows_it_is_one_shell_word_that_parses_back():
    plain = defaults()
    typed = {k: override_text(getattr(plain, k)) for k in fields() if k != "recipe"}
    assert not [t for t in typed.values() if " " in t]
    assert typed["milestones"] == "[32000,48000]" and typed["init"] == '""' and typed["augment"] == "true"
    cfg = parse(["recipe=default", *(f"{k}={t}" for k, t in typed.items())])
    assert {k: getattr(cfg, k) for k in typed} == {k: getattr(plain, k) for k in typed}


def test_a_set_value_typed_back_is_the_same_value():
    values = {"betas": [0.8, 0.9], "freeze": ["stem", "stage1"], "warmup_lr": 0.123456789, "decay_bn": False,
              "weight_decay": 5e-05, "milestones": []}
    cfg = parse(["optim=adam", *(f"{k}={override_text(v)}" for k, v in values.items())])
    assert {k: getattr(cfg, k) for k in values} == values


def test_report_text_is_g_for_floats_in_full_where_g_rounds_and_lists_comma_joined():
    assert [report_text(v) for v in (0.5, -6.0, 1e-4, 5e-05, 0.123456789, math.nan)] == \
        ["0.5", "-6", "0.0001", "5e-05", "0.123456789", "nan"]
    assert [report_text(v) for v in ((1000, 1500), (), None, "gating", 110)] == ["1000,1500", "", "", "gating", "110"]


def test_a_statistic_is_two_decimals_fail_on_a_failed_median_and_blank_for_none():
    assert [statistic(v) for v in (8.1249, math.inf, None)] == ["8.12", "fail", ""]
    assert statistic(8.12649, ".4g") == "8.126"


def test_a_name_token_joins_lists_by_dashes_and_keeps_a_paths_file_name():
    assert [name_token(v) for v in ([1000, 1500], [], "/data/imgs", 0.05, True)] == \
        ["1000-1500", "none", "imgs", "0.05", "True"]
