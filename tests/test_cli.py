"""Bad input on the command line: exit code 2, one line on stderr naming the field, no traceback,
nothing written."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from nasq_ray.run import main

BAD_SPACES = {
    "unknown_op": ("stages:\n  - channels: 8\n    ops: [conv3x3, conv7x7]\n", "stages[0].ops"),
    "bits_33": ("stages:\n  - channels: 8\n    ops: conv3x3\nquant:\n  w_bits: [4, 33]\n", "quant.w_bits"),
    "empty_choice": ("stages:\n  - channels: []\n    ops: conv3x3\n", "stages[0].channels"),
    "malformed": ("stages:\n  - channels: [8, 16\n    ops: conv3x3\n", "malformed YAML"),
    "unknown_key": ("stages:\n  - channels: 8\n    opps: conv3x3\n", "did you mean 'ops'"),
    "too_much_downsampling": (
        "stages:\n" + "  - {channels: 8, ops: conv3x3, stride: 2}\n" * 4, "no valid architecture"),
}


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line_error(rc, err, needle):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_file(capsys, tmp_path, case):
    text, needle = BAD_SPACES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    rc, _, err = _run(capsys, ["--space", str(path), "--out", str(tmp_path / "out")])
    _assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--searcher", "tpee"], "searcher: unknown name 'tpee' (did you mean 'tpe'?)"),
    (["--scheduler", "ashaa"], "scheduler: unknown name 'ashaa'"),
    (["--space", "digits_smal"], "space: unknown name 'digits_smal' (did you mean 'digits_small'?)"),
    (["--num-samples", "0"], "search.num_samples: 0 is not allowed"),
    (["--max-epochs", "0"], "search.max_epochs"),
    (["--cpus-per-trial", "0"], "resources.cpus_per_trial"),
    (["--gpus-per-trial", "-1"], "resources.gpus_per_trial"),
    (["--max-concurrent", "0"], "search.max_concurrent"),
    (["--objective", "mnass"], "objective.form: unknown name 'mnass'"),
    (["--cost", "latency"], "objective.cost: unknown name 'latency'"),
    (["--cost", "latency_ms", "--latency", "tabel"], "objective.latency: unknown name 'tabel' (did you mean 'table'?)"),
    (["--latency", "table"], "objective.latency: 'table' says how latency_ms is found, and the cost here is size_kb"),
    (["--target", "0"], "objective.target"),
    (["--data", "imagenet"], "data: unknown name 'imagenet'"),
    (["--data", "mnist"], "data-dir"),
    (["--data-dir", "/tmp"], "data.dir: '/tmp' is not read: data 'digits' is embedded"),  # --data forgotten
    (["--max-val", "1"], "data.max_val: 1 is not allowed; allowed: integers >= 2"),
    (["--set", "search.num_samples=abc"], "search.num_samples: 'abc' is not allowed"),
    (["--set", "search.numsamples=3"], "did you mean 'num_samples'"),
    (["--searcher-arg", "oops"], "--searcher-arg: 'oops' is not allowed"),
    (["--searcher", "random", "--searcher-arg", "bogus=1"], "searcher_args"),
    (["--scheduler-arg", "bogus=1"], "scheduler_args"),
    # values the searcher or scheduler would only trip on inside Optuna or Ray, with a traceback
    (["--searcher-arg", "n_startup_trials=abc"], "searcher_args: n_startup_trials='abc' is not allowed; allowed: a number"),
    (["--searcher-arg", "n_startp_trials=5"], "does not accept ['n_startp_trials']; allowed: "),
    (["--scheduler-arg", "grace_period=abc"], "scheduler_args.grace_period: 'abc' is not allowed"),
    (["--searcher", "anneal", "--searcher-arg", "t_end=1e-4", "--searcher-arg", "t_start=x"],
     "searcher_args: t_start='x' is not allowed"),  # 1e-4 is a number (YAML 1.2), not text: only t_start is named
    (["--max-epochs", "4", "--scheduler-arg", "grace_period=5"], "allowed: integers from 1 to max_epochs (4)"),
    (["--scheduler", "hyperband", "--scheduler-arg", "reduction_factor=-2"], "scheduler_args.reduction_factor: -2"),
    (["--name", "a/b"], "name:"),
    (["--name", ".."], "name: '..' is not allowed"),  # results would land beside --out, not in it
    (["--seed", "-1"], "search.seed: -1 is not allowed; allowed: integers from 0 to 2**32 - 1"),
    (["--set", "data.seed=-1"], "data.seed: -1 is not allowed"),
    (["--searcher", "given"], "search.searcher: 'given' is not allowed; allowed: given only with search.warm_start >= 1"),
    (["--label-column", "y"], "data.label_column: 'y' is not read"),
    # ignored before: a table's flags on a run without one, a metric a table trial never reports, a cost not its own
    (["--table-acc", "foo"], "table.acc: names a column of a table, and this run has none (trial kind 'trained')"),
    (["--space", "nb201", "--set", "objective.acc=val_f1"], "objective.acc: 'val_f1' is not reported by a table trial"),
    (["--space", "nb201", "--cost", "bitops"], "objective.cost: 'bitops' is not the table's cost column"),
    (["--space", "nb201", "--trial", "trained"], "trial: 'trained' trains networks, and space 'nb201' is abstract"),
    (["--space", "nb201", "--objective", "linear"], "objective.target: needed with objective.cost macs"),
    (["--table", ""], "table.path: '' is not allowed"),
    (["--verbose", "--quiet"], "quiet: true with verbose true"),
    # flags of another kind of run, ignored without a word before
    (["--finetune-epochs", "3"], "search.finetune_epochs: --finetune-epochs applies to a one-shot search only"),
    (["--supernet-workers", "2"], "search.supernet_workers: --supernet-workers applies to a one-shot search only"),
    (["--float-epochs", "3"], "model.float_epochs: --float-epochs sets the float training of your own model"),
    (["--trial", "subnet"], "trial: 'subnet' trials are phases of a one-shot search"),
    (["--trial", "finetune"], "trial: 'finetune' trials are phases of a one-shot search"),
    (["--config", "/dev/null/x.yaml"], "config: file '/dev/null/x.yaml' does not exist"),
])
def test_bad_flag(capsys, tmp_path, argv, needle):
    rc, _, err = _run(capsys, [*argv, "--out", str(tmp_path / "out")])
    _assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "out").exists()


def test_missing_and_malformed_data_dir(capsys, tmp_path):
    rc, _, err = _run(capsys, ["--data", "mnist", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path)])
    _assert_one_line_error(rc, err, "nope")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x08\x08\x08\x03garbage")
    rc, _, err = _run(capsys, ["--data", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path)])
    _assert_one_line_error(rc, err, "train-images-idx3-ubyte")


def test_csv_without_label_column(capsys, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,target\n1,2,0\n3,4,1\n")
    rc, _, err = _run(capsys, ["--data", "csv", "--data-dir", str(path), "--space", "mlp", "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, "no label column 'label'")


def test_image_space_on_tabular_data(capsys, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    rc, _, err = _run(capsys, ["--data", "csv", "--data-dir", str(path), "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, "needs image input")


@pytest.mark.parametrize("text, needle", [
    ("search:\n  num_samples: [1\n", "malformed YAML"),
    ("serch:\n  num_samples: 3\n", "did you mean 'search'"),
    ("search:\n  num_samples: -3\n", "search.num_samples"),
    ("- just\n- a list\n", "expected a mapping"),
    ("objective:\n  form: pareto\n", "objective.form"),
    ("search:\n  max_epochs: 1\nsearch:\n  num_samples: 1\n", "line 3: malformed YAML: key 'search' given twice (first on line 1)"),
    # a merge key's values may be overridden (YAML allows it): the override is taken, and checked
    ("search: {<<: {num_samples: 3, max_epochs: 2}, max_epochs: 0}\n", "search.max_epochs: 0"),
])
def test_bad_experiment_file(capsys, tmp_path, text, needle):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    rc, _, err = _run(capsys, ["--config", str(path), "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, needle)


def test_missing_experiment_file(capsys, tmp_path):
    rc, _, err = _run(capsys, ["--config", str(tmp_path / "none.yaml")])
    _assert_one_line_error(rc, err, "config: file")


def test_unreachable_address(capsys, tmp_path):
    rc, _, err = _run(capsys, ["--address", "127.0.0.1:1", "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, "address: cannot reach a Ray cluster at '127.0.0.1:1'")
    assert not (tmp_path / "o").exists()


def test_unusable_storage(capsys, tmp_path):
    rc, _, err = _run(capsys, ["--storage", "foo://bucket/x", "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, "storage: cannot use 'foo://bucket/x'")
    assert not (tmp_path / "o").exists()
    if os.path.isdir("/proc/self"):  # a folder where os.access says yes to root and nothing can be made
        rc, _, err = _run(capsys, ["--storage", "/proc/nasq_store", "--out", str(tmp_path / "o")])
        _assert_one_line_error(rc, err, "storage: cannot use '/proc/nasq_store'")
        rc, _, err = _run(capsys, ["--storage", "file:///proc/nasq_store", "--out", str(tmp_path / "o")])
        _assert_one_line_error(rc, err, "storage: cannot use 'file:///proc/nasq_store'")
    (tmp_path / "f").write_text("")
    rc, _, err = _run(capsys, ["--storage", f"file://{tmp_path}/f/x", "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, f"storage: cannot use 'file://{tmp_path}/f/x' (")
    assert not (tmp_path / "o").exists()


def test_resume_of_a_folder_without_an_experiment(capsys, tmp_path):
    rc, _, err = _run(capsys, ["--resume", str(tmp_path)])
    _assert_one_line_error(rc, err, "resume:")


def test_resume_of_an_experiment_file_edited_to_a_bad_value_names_the_file(capsys, tmp_path):
    from nasq_ray.config import ExperimentConfig, with_checksum

    run = tmp_path / "run"
    run.mkdir()
    text = ExperimentConfig(name="run").to_yaml().replace("form: mnas", "form: bogus")
    (run / "experiment.yaml").write_text(with_checksum(text))  # as if the run had written it so
    rc, _, err = _run(capsys, ["--resume", str(run)])
    _assert_one_line_error(rc, err, f"{run / 'experiment.yaml'}: objective.form: unknown name 'bogus'")
    # without its checksum line (emptied, or the line deleted) it cannot be told unedited: refused (an emptied
    # file resumed the default experiment over the run's trials and relabelled them)
    for edited in ("", text):
        (run / "experiment.yaml").write_text(edited)
        rc, _, err = _run(capsys, ["--resume", str(run)])
        _assert_one_line_error(rc, err, f"resume: {run / 'experiment.yaml'} was edited after the run started")
    rc, _, err = _run(capsys, ["--resume", str(run / "experiment.yaml")])
    _assert_one_line_error(rc, err, "is a file; give the results folder of an earlier run")


def test_resume_refuses_flags_that_would_change_the_experiment(capsys, tmp_path):
    rc, _, err = _run(capsys, ["--resume", str(tmp_path), "--num-samples", "5"])
    _assert_one_line_error(rc, err, "--num-samples: not allowed with --resume")
    rc, _, err = _run(capsys, ["--resume", str(tmp_path), "--max-epochs", "0"])  # 0 == False: it was ignored
    _assert_one_line_error(rc, err, "--max-epochs: not allowed with --resume")
    rc, _, err = _run(capsys, ["--resume", "", "--out", str(tmp_path / "o")])  # it started a new default search
    _assert_one_line_error(rc, err, "--resume: '' is not allowed")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--keep-checkpoints", "0"], "search.keep_checkpoints: 0 is not allowed"),
    (["--time-budget", "-1"], "search.time_budget_s"),
    (["--address", "nohost"], "address: 'nohost' is not allowed"),
    (["--warm-start", "-1"], "search.warm_start: -1 is not allowed; allowed: integers from 0 to"),
    (["--warm-start", "2", "--space", "nb201"], "search.warm_start: needs trained trials"),
])
def test_bad_cluster_flag(capsys, tmp_path, argv, needle):
    rc, _, err = _run(capsys, [*argv, "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err, needle)


def test_without_an_address_a_private_ray_is_started(monkeypatch):
    """Never the cluster a stale /tmp/ray/ray_current_cluster names (that hangs a laptop run)."""
    import ray

    from nasq_ray.config import from_dict
    from nasq_ray.search.session import init_ray

    seen = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    init_ray(from_dict({}))
    assert seen["address"] == "local"


def test_real_process_exit_code_and_argparse_errors(tmp_path):
    for argv, needle in ((["--searcher", "nope"], "searcher: unknown name"),
                         (["--num-samples", "abc"], "--num-samples: invalid int value"),
                         (["--no-such-flag"], "unrecognized arguments"),
                         (["--num-samp", "2"], "unrecognized arguments: --num-samp 2")):  # whole flags only
        p = subprocess.run([sys.executable, "-m", "nasq_ray.run", *argv, "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr and "Traceback" not in p.stderr


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--space", "--data", "--data-dir", "--searcher", "--scheduler", "--num-samples",
                 "--max-epochs", "--objective", "--seed", "--out", "--name", "--cpus-per-trial",
                 "--gpus-per-trial", "--max-concurrent", "--address"):
        assert flag in out


def test_list_strategies(capsys):
    rc, out, _ = _run(capsys, ["--list-strategies"])
    assert rc == 0
    for name in ("random", "tpe", "nsga2", "asha", "fifo"):
        assert name in out


BAD_OWN_MODEL = {
    "not_importable": (["--model", "nomodule:Net"], "model.factory: cannot import module 'nomodule'"),
    "not_a_module": (["--model", "mynet:not_a_model"], "returned int; expected a torch.nn.Module"),
    "bad_argument": (["--model", "mynet:Net", "--model-arg", "depth=3"], "unexpected keyword argument 'depth'"),
    "weights_do_not_fit": (["--model", "mynet:Net", "--weights", "small.pt"],
                           "mismatched shapes: stem.0.weight (4, 1, 3, 3) in the file, (8, 1, 3, 3) in the model"),
    "weights_a_folder": (["--model", "mynet:Net", "--weights", "wdir"], "model.weights: 'wdir' is a folder"),
    "weights_pickled_by_hand": (["--model", "mynet:Net", "--weights", "pickled.pt"],  # torch's reason, one line
                                "refused it: UnpicklingError: Unsupported operand 149); save it with torch.save"),
    "integer_outputs": (["--model", "mynet:IntOut"], "model: gives torch.int64 outputs; expected float logits"),
    "all_frozen": (["--model", "mynet:Frozen"], "model: none of its parameters requires grad"),
    "other_outputs_in_eval": (["--model", "mynet:FewerInEval"],
                              "model: gives (2, 10) in evaluation mode but (2, 5) in training mode"),
    "other_path_on_zeros": (["--model", "mynet:OnZerosOtherPath", "--space", "prune.yaml"],
                            "model: fails on an input of zeros of shape (1, 1, 8, 8)"),
    "nan_outputs": (["--model", "mynet:NaNOut", "--float-epochs", "1"],
                    "model: the float model's training loss is nan in epoch 1"),
    "nan_weights": (["--model", "mynet:Net", "--weights", "nan.pt"],
                    "model.weights: 'nan.pt': tensor 'fc.bias' holds NaN or infinite values"),
    "data_dir_nothing_reads": (["--model", "mynet:Net", "--data", "mynet:takes_no_dir", "--data-dir", "/tmp"],
                               "data.dir: '/tmp' is not read: mynet:takes_no_dir() takes no data_dir argument"),
    "glob_matches_nothing": (["--model", "mynet:Net", "--space", "globs.yaml"],
                             "quant.exclude: 'layer9.*' matches no Conv2d/Linear layer"),
    "items_not_pairs": (["--model", "mynet:Net", "--data", "mynet:bad_items"], "expected (input, label)"),
    "model_fails_on_data": (["--model", "mynet:Net", "--data", "mynet:rgb"],
                            "fails on the data's input of shape (2, 3, 8, 8)"),
    "untraceable_without_fallback": (["--model", "mynet:Branchy", "--set", "model.trace=fx"],
                                     "does not trace with torch.fx"),
    "data_factory_not_importable": (["--model", "mynet:Net", "--data", "mynet:nothing"],
                                    "data: module 'mynet' has no attribute 'nothing'"),
    "distill_alpha_below_0": (["--model", "mynet:Net", "--space", "alpha.yaml"],
                              "distill.alpha: -0.5 is not allowed; allowed: numbers in [0, 1]"),
}


@pytest.mark.parametrize("case", sorted(BAD_OWN_MODEL))
def test_bad_own_model_input_exits_2_with_one_line_before_anything_runs(capsys, tmp_path, monkeypatch, case):
    import torch

    from user_model_code import write_user_module

    write_user_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "globs.yaml").write_text("quant:\n  exclude: ['layer9.*']\n")
    (tmp_path / "alpha.yaml").write_text("distill:\n  alpha: -0.5\n")
    import mynet

    torch.save(mynet.Net(width=4).state_dict(), tmp_path / "small.pt")
    (tmp_path / "wdir").mkdir()
    torch.save({**mynet.Net().state_dict(), "fc.bias": torch.full((10,), float("nan"))}, tmp_path / "nan.pt")
    (tmp_path / "prune.yaml").write_text("prune: {keep: [1.0, 0.5]}\n")
    (tmp_path / "pickled.pt").write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    argv, needle = BAD_OWN_MODEL[case]
    rc, out, err = _run(capsys, [*argv, "--out", str(tmp_path / "out"), "--name", "bad"])
    _assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "out" / "bad" / "experiment.yaml").exists()


def test_show_space_lists_a_user_models_parameters_and_the_layers_they_govern(capsys, tmp_path, monkeypatch):
    from user_model_code import write_user_module

    write_user_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc, out, _ = _run(capsys, ["--model", "mynet:Net", "--show-space"])
    assert rc == 0
    assert "7 Conv2d/Linear layers (7 quantized), 4 prunable channel groups" in out
    assert "stem.0.keep" in out and "-> stem.0, a, dw, pw" in out  # the residual's coupled channels
    assert "pinned at 8/8: stem.0, fc" in out and "a.w_bits" in out


def test_show_space_of_a_one_shot_run_is_what_phase_2_searches(capsys):
    rc, out, _ = _run(capsys, ["--show-space"])
    assert rc == 0 and "  train.lr " in out
    rc, out, _ = _run(capsys, ["--oneshot", "--show-space"])
    assert rc == 0 and "  train.lr " not in out and "train.lr=0.0094" in out  # held at phase 1's value


def test_show_space_with_resume_shows_the_saved_runs_space(capsys, tmp_path):
    from nasq_ray.config import from_dict
    from nasq_ray.search.searchers import experiment_yaml

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "experiment.yaml").write_text(experiment_yaml(from_dict({"space": "mlp", "name": "old"})))
    rc, out, _ = _run(capsys, ["--resume", str(folder), "--show-space"])
    _, default, _ = _run(capsys, ["--show-space"])
    assert rc == 0 and out != default  # it had shown the default space (digits_small)
    assert out == _run(capsys, ["--space", "mlp", "--show-space"])[1]
    rc, _, err = _run(capsys, ["--resume", str(tmp_path / "none"), "--show-space"])
    _assert_one_line_error(rc, err, "resume: ")


def test_sigterm_before_the_search_starts_ends_the_command_as_ctrl_c_does(capsys, monkeypatch):
    import os
    import signal
    import time

    from nasq_ray.search import driver

    def loading_data(cfg):  # SIGTERM arrives while the run prepares (data, a float model), before Ray runs
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(driver, "run_search", loading_data)
    before = signal.getsignal(signal.SIGTERM)
    rc, _, err = _run(capsys, ["--num-samples", "2"])
    assert rc == 130 and err.strip() == "interrupted before the search started; nothing to resume"  # was 143, silent
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_an_interrupt_outside_tunes_own_stop_names_the_resume_when_the_folder_can_resume(capsys, monkeypatch, tmp_path):
    import os
    import signal
    import time

    from nasq_ray.search import driver

    def between_phases(cfg):  # e.g. a one-shot run whose phase 1 is saved, stopped before phase 2 starts
        (cfg.out_dir / "supernet").mkdir(parents=True)
        (cfg.out_dir / "experiment.yaml").write_text("")
        (cfg.out_dir / "supernet" / "tuner.pkl").write_bytes(b"")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(driver, "run_search", between_phases)
    rc, _, err = _run(capsys, ["--out", str(tmp_path), "--name", "shot"])
    assert rc == 130 and err.strip().splitlines() == [
        "interrupted; resume with:", f"  python -m nasq_ray.run --resume {tmp_path / 'shot'}"]


def test_config_files_that_are_not_utf8_or_nested_too_deeply(capsys, tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("search:\n  num_samples: 3  # caf\xe9\n".encode("latin-1"))
    rc, _, err = _run(capsys, ["--config", str(tmp_path / "latin1.yaml"), "--out", str(tmp_path / "out")])
    _assert_one_line_error(rc, err, "latin1.yaml: byte 31 is not UTF-8 text; allowed: a YAML file in UTF-8")
    (tmp_path / "deep.yaml").write_text("[" * 5000 + "]" * 5000)
    rc, _, err = _run(capsys, ["--config", str(tmp_path / "deep.yaml"), "--out", str(tmp_path / "out")])
    _assert_one_line_error(rc, err, "deep.yaml: nested too deeply to read")
    assert not (tmp_path / "out").exists()


def test_every_trial_failed_names_the_reason_a_trial_reported():
    from types import SimpleNamespace

    from nasq_ray.results.records import TrialRecord
    from nasq_ray.run import _all_failed, _none_finished

    rec = TrialRecord(trial_id="t1", config={}, metrics={"status": "failed", "fail_reason": "DataError: a label is -1"},
                      status="failed")
    result = SimpleNamespace(records=[rec], out_dir=__import__("pathlib").Path("/x"))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _all_failed(result)
    assert "the first one's error: DataError: a label is -1" in err.getvalue()  # it said "no error recorded"
    cut = TrialRecord(trial_id="t2", config={}, metrics={"epoch": 1}, status="pruned")  # --time-budget cut it
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert not _all_failed(SimpleNamespace(records=[cut], out_dir=None))
        assert _none_finished(SimpleNamespace(records=[cut], out_dir=None))  # exit 1: no trial finished
    assert err.getvalue().startswith("error: no trial finished (1 trial started")
