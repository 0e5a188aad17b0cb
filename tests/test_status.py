"""`python -m resnet_ablate.status`: its one-line errors (the states it counts are checked where they arise:
test_launch.py, test_runfolder.py, test_slurm.py)."""
from resnet_ablate import status


def test_status_of_a_missing_path_says_it_does_not_exist(tmp_path, capsys):
    assert status.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'} does not exist\n"
