"""The one-line error messages: an unknown name with the allowed ones and the closest, another library's
exception cut to its first line."""
from resnet_ablate.errors import first_line, unknown


def test_message_helpers():
    assert str(unknown("launcher", "cloud", ["inline", "slurm"])) == "unknown launcher 'cloud'; allowed: inline, slurm"
    assert str(unknown("budget", "quik", ["full", "quick"], where="a.yaml", of="for t1")) == \
        "a.yaml: unknown budget 'quik' for t1 (did you mean 'quick'?); allowed: full, quick"
    assert str(unknown("spec", "x", ["a"], extra="(or a path)")) == "unknown spec 'x'; allowed: a (or a path)"
    assert first_line(RuntimeError("")) == "RuntimeError" and first_line(ValueError("\n a\nb")) == "a"
    assert first_line("") == ""
