"""What packs with what (packing.py): a sweep's runs split into jobs by the lockstep settings, and with
pack_mode=wide by every setting but the seed; why runs cannot be one wide net or a graph, from what their
entries declare; the step mode the cost line costs them at."""
import pytest
from helpers import TINY

from resnet_ablate import packing
from resnet_ablate.errors import UsageError
from resnet_ablate.models.shortcuts import SHORTCUTS, Identity
from resnet_ablate.training.config import ENTRIES
from resnet_ablate.training.optim import OPTIMIZERS, SGD
from resnet_ablate.training.parse import parse


def test_runs_per_job_packs_only_runs_that_can_step_together():
    cfgs = [parse([*TINY, f"seed={s}", f"batch_size={b}"]) for b in (8, 16) for s in range(3)]
    packed = packing.jobs(cfgs, 2)
    assert [[(c.batch_size, c.seed) for c in g] for g in packed] == [[(8, 0), (8, 1)], [(8, 2)], [(16, 0), (16, 1)],
                                                                      [(16, 2)]]
    assert packing.jobs(cfgs, 1) == [[c] for c in cfgs]
    with pytest.raises(UsageError, match=r"^packed runs must share batch_size \(got 16, 8\)$"):
        packing.check_lockstep(cfgs[2:4])


def test_wide_runs_are_packed_by_every_setting_but_the_seed():
    cfgs = [parse([*TINY, f"seed={s}", f"shortcut={sc}", f"pack_mode={mode}"])
            for mode in ("wide", "streams") for sc in ("identity", "gating") for s in range(3)]
    groups = packing.jobs(cfgs, 4)
    assert [[(c.pack_mode, c.shortcut, c.seed) for c in g] for g in groups] == [
        [("wide", "identity", 0), ("wide", "identity", 1), ("wide", "identity", 2)],
        [("wide", "gating", 0), ("wide", "gating", 1), ("wide", "gating", 2)],
        [("streams", sc, s) for sc, s in (("identity", 0), ("identity", 1), ("identity", 2), ("gating", 0))],
        [("streams", "gating", 1), ("streams", "gating", 2)]]
    assert packing.why_not_wide(groups[0], ENTRIES) is None
    assert packing.why_not_wide([groups[0][0], groups[1][0]], ENTRIES) == "they differ in shortcut"


class Undeclared(Identity):
    """The identity merge, registered without declaring what it can do."""


class UndeclaredSGD(SGD):
    """SGD, registered without declaring what it can do."""


@pytest.fixture
def undeclared():
    SHORTCUTS.register("test_undeclared")(Undeclared)
    OPTIMIZERS.register("test_undeclared_sgd", elementwise=True)(UndeclaredSGD)
    yield
    SHORTCUTS.unregister("test_undeclared")
    OPTIMIZERS.unregister("test_undeclared_sgd")


def test_an_entry_that_declares_nothing_neither_packs_wide_nor_is_captured(undeclared):
    """Declared capabilities are not inherited: a subclass of identity registered without them is not taken
    down the fast paths its parent was checked for."""
    assert SHORTCUTS.can("identity", "channelwise") and not SHORTCUTS.can("test_undeclared", "channelwise")
    wide, shortcut, optim = (parse([*TINY, "pack_mode=wide", "device=cuda", *extra]) for extra in
                             ([], ["shortcut=test_undeclared"], ["optim=test_undeclared_sgd"]))
    assert packing.why_not_wide([shortcut], ENTRIES) == "shortcut 'test_undeclared' does not declare channelwise"
    assert packing.why_not_wide([optim], ENTRIES) == "optim 'test_undeclared_sgd' does not declare zero_state"
    assert packing.why_no_graph(optim, ENTRIES) == ("optim 'test_undeclared_sgd' does not declare capturable; "
                                                    "optim 'test_undeclared_sgd' does not declare zero_state")
    assert [packing.step_mode(packing.stepped(c, ENTRIES)) for c in (wide, shortcut, optim)] == \
        ["wide", "graph", "eager"]
    assert packing.step_mode(packing.stepped(parse([*TINY, "cuda_graph=false"]), ENTRIES)) == "eager"
    with pytest.raises(TypeError, match="^shortcut 'test_x': unknown capability 'channel_wise'; allowed: channelwise$"):
        SHORTCUTS.register("test_x", channel_wise=True)
