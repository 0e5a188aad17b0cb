"""Recipes (`training/recipes.py`): a bare command trains he2016, each recipe's values as its paper or code gives
them (warm-up by depth, epochs as iterations, the BN group half the batch, fp32), the command line winning, and a
run named by its resolved settings, not its recipe."""
import pytest
from helpers import run_cli

from resnet_ablate import run
from resnet_ablate.errors import UsageError
from resnet_ablate.training.configfile import identity_items, run_name, to_yaml
from resnet_ablate.training.parse import help_text, parse
from resnet_ablate.training.recipes import RECIPES


def test_a_bare_command_trains_he2016_and_recipe_default_keeps_the_keys_defaults():
    """Issue 28 item 4: the mission's command trains a Table 1 cell as the 2016 paper did."""
    plain, he2016, default = parse([]), parse(["recipe=he2016"]), parse(["recipe=default"])
    assert (plain.recipe, plain.normalize, plain.bn_batch, plain.warmup_iters, plain.precision) == \
        ("he2016", "pixel_mean", 64, 400, "fp32")
    assert to_yaml(plain) == to_yaml(he2016)
    assert (default.normalize, default.nesterov, default.bn_batch, default.warmup_iters, default.precision) == \
        ("channel", False, 0, 400, "auto")


def test_he2015_warms_up_resnet110_only_and_splits_the_batch_over_two_bns():
    for depth, warmup in ((110, 400), (56, 0), (20, 0)):
        cfg = parse(["recipe=he2015", f"depth={depth}"])
        assert (cfg.normalize, cfg.nesterov, cfg.bn_batch, cfg.warmup_iters, cfg.milestones) == \
            ("pixel_mean", False, 64, warmup, [32000, 48000])
    he2016 = parse(["recipe=he2016", "depth=56"])
    assert (he2016.normalize, he2016.bn_batch, he2016.warmup_iters) == ("pixel_mean", 64, 400)


def test_epoch_schedules_become_iterations_from_the_training_set_and_batch():
    fb = parse(["recipe=fb_torch"])
    assert (fb.iterations, fb.milestones, fb.nesterov, fb.normalize, fb.warmup_iters, fb.bn_batch) == \
        (64063, [31250, 47266], True, "channel", 0, 64)  # ceil(164 * 50000 / 128); 80 and 121 epochs
    assert parse(["recipe=fb_torch", "val_split=5000"]).milestones == [28125, 42540]  # 45000 / 128 per epoch
    k1 = parse(["recipe=resnet1k", "depth=1001"])
    assert (k1.batch_size, k1.bn_batch, k1.iterations, k1.milestones) == (64, 32, 156250, [62500, 94532])
    assert parse(["batch_size=256", "recipe=fb_torch"]).iterations == 32032  # the command line's batch
    assert parse(["recipe=fb_torch", "dataset=synthetic", "synthetic_size=640", "batch_size=64"]).iterations == 1640


def test_the_command_line_wins_wherever_the_recipe_stands():
    assert parse(["lr=0.05", "recipe=fb_torch", "nesterov=false"]).lr == 0.05
    assert parse(["warmup_iters=7", "recipe=he2015", "depth=110"]).warmup_iters == 7
    assert parse(["recipe=fb_torch", "iterations=1000", "milestones=[500]"]).milestones == [500]


def test_an_epoch_recipe_on_a_folder_data_set_needs_the_schedule(tmp_path):
    with pytest.raises(UsageError, match="recipe=fb_torch gives its schedule in epochs"):
        parse(["recipe=fb_torch", "dataset=folder", f"data_dir={tmp_path}"])
    cfg = parse(["recipe=fb_torch", "dataset=folder", f"data_dir={tmp_path}", "iterations=90", "milestones=[60]"])
    assert (cfg.iterations, cfg.nesterov) == (90, True)


def test_a_run_is_its_resolved_settings_not_the_recipe_name(tmp_path):
    """Same name, same config check, same report group, whether spelled as a recipe or as its values."""
    by_recipe = parse(["recipe=he2015", "depth=20"])
    by_hand = parse(["recipe=default", "depth=20", "normalize=pixel_mean", "warmup_iters=0", "bn_batch=64",
                     "precision=fp32"])
    assert run_name(by_recipe) == run_name(by_hand) == "cifar10_d20_original_identity_normalize=pixel_mean_" \
                                                       "warmup_iters=0_bn_batch=64_precision=fp32_s0"
    assert identity_items(by_recipe) == identity_items(by_hand)
    assert "recipe: he2015" in to_yaml(by_recipe) and "normalize: pixel_mean" in to_yaml(by_recipe)


def test_the_run_command_lists_a_recipes_runs_by_their_resolved_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run.main(["recipe=he2015", "depth=110", "dry_run=true", "seed=0,1"]) == 0
    assert "cifar10_d110_original_identity_normalize=pixel_mean_bn_batch=64_precision=fp32_s1" in \
        capsys.readouterr().out


def test_the_papers_recipes_train_in_fp32_and_default_keeps_auto():
    """Issue 28 item 2: bf16 is a choice (precision=bf16), not a recipe's value: every registered recipe but
    default (the config keys' own defaults) sets fp32."""
    for name in (n for n in RECIPES if n != "default"):
        assert parse([f"recipe={name}"]).precision == "fp32", name
    assert parse(["recipe=default"]).precision == "auto"
    assert parse(["precision=bf16"]).precision == "bf16"


def test_the_papers_recipes_are_registered():
    """The recipes the paper rows and specs name (the fp32 rule above covers whatever else is registered)."""
    assert {"default", "he2015", "he2016", "fb_torch", "resnet1k"} <= set(RECIPES)


def test_he2015_warms_up_resnet1202_as_resnet110():
    """Issue 28 item 3: the 2015 paper trains ResNet-1202 "as described above"."""
    assert [parse(["recipe=he2015", f"depth={d}"]).warmup_iters for d in (20, 56, 110, 1202)] == [0, 0, 400, 400]


def test_the_recipes_bn_group_is_half_the_batch_so_a_smaller_batch_keeps_working():
    """Issue 28 item 4: the papers' 2 GPUs; today's bn_batch=64 refused batch_size=32."""
    assert parse(["batch_size=32"]).bn_batch == 16
    assert parse(["recipe=he2015", "batch_size=8"]).bn_batch == 4
    assert parse(["recipe=resnet1k", "depth=1001"]).bn_batch == 32 and parse(["recipe=fb_torch"]).bn_batch == 64
    assert parse(["batch_size=32", "bn_batch=8"]).bn_batch == 8  # the command line wins
    with pytest.raises(UsageError) as odd:
        parse(["batch_size=33"])
    assert str(odd.value) == "bn_batch=16 does not divide batch_size=33 into whole groups; use a divisor of 33, or " \
                             "bn_batch=0 for one BN over the batch (recipe he2016 sets the BN group to half the " \
                             "batch: an even batch_size keeps it)"
    smoke = "dataset=synthetic depth=8 batch_size=32 iterations=100 milestones=[50,75] eval_every=50 warmup_iters=0 " \
            "threads=1".split()  # the README's smoke command
    assert (parse(smoke).bn_batch, parse(smoke).recipe) == (16, "he2016")


def test_help_shows_the_default_recipe_its_precision_and_bn_group(tmp_path):
    text = help_text()
    assert "  recipe=he2016  (str)" in text and "A bare command trains he2016" in text
    assert "recipe=default keeps the defaults shown" in text
    assert "the recipes (he2016, the default, too) set fp32" in text
    he2016 = text[text.index("  he2016:"):text.index("  fb_torch:")]
    assert "precision=fp32" in he2016 and "bn_batch=batch_size/2" in he2016
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "recipe=he2016" in proc.stdout


def test_fb_torch_reads_the_shared_bn_relu_in_preact_units_only_and_evaluates_every_epoch():
    """Issue 28 items 6 and 7."""
    assert parse(["recipe=fb_torch", "unit=full_preact", "depth=110"]).preact_shortcut_input == "shared"
    assert parse(["recipe=fb_torch", "unit=relu_preact", "depth=56"]).preact_shortcut_input == "shared"
    assert parse(["recipe=fb_torch", "unit=original", "depth=110"]).preact_shortcut_input == "raw"  # not refused
    fb = parse(["recipe=fb_torch"])
    assert fb.eval_every == 391  # ceil(50000 / 128)
    assert parse(["recipe=fb_torch", "eval_every=1000"]).eval_every == 1000
    assert parse(["recipe=he2015"]).eval_every == 1000
