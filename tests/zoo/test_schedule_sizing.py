"""Schedules sized to the run: a solver's lengths given as percentages of
its stage ("40%"), `max_iter` defaulting to the stage's length, and the
warnings about schedules that do not fit the run. Nothing here trains: the
fits are `recorded_fits`, or none at all."""

import decimal
import json

import pytest

from callbacks import current_lr
from tests.zoo.conftest import stop_after_one_epoch, write_spec
from zoo.cli import main
from zoo.runner import Runner
from zoo.sections import EarlyStopping, Solver, Warmup, to_dict
from zoo.solver import sized_solver, stage_warnings
from zoo.spec import SpecError, load_spec
from zoo.train import train, validate


def spec(**solver):
    """A digits spec; a solver field given as None is left out."""
    fields = {"base_lr": 0.1, "epochs": 2, **solver}
    return {"backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "data": {"builtin": "digits"},
            "solver": {key: value for key, value in fields.items() if value is not None}}


def share(percentage, iterations):
    """Plain decimal arithmetic: `percentage` of `iterations`, rounded
    half up, at least 1."""
    exact = decimal.Decimal(percentage.rstrip("%")) * iterations / 100
    return max(1, int(exact.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP)))


@pytest.mark.parametrize("iterations", [1, 7, 150, 4321])
def test_every_length_given_as_a_percentage_becomes_its_share_of_the_stage(iterations):
    solver = Solver(base_lr=0.1, stepsize="40%", stepvalue=("12.5%", "50%", "75%"), max_iter="80%",
                    step_size="33.3%", warmup=Warmup("5%", start_lr=0.01))

    sized = sized_solver(solver, iterations)

    assert sized.stepsize == share("40%", iterations)
    assert sized.stepvalue == tuple(share(value, iterations) for value in ("12.5%", "50%", "75%"))
    assert sized.max_iter == share("80%", iterations)
    assert sized.step_size == share("33.3%", iterations)
    assert sized.warmup == Warmup(share("5%", iterations), start_lr=0.01)
    assert sized == Solver(base_lr=0.1, stepsize=sized.stepsize, stepvalue=sized.stepvalue, max_iter=sized.max_iter,
                           step_size=sized.step_size, warmup=sized.warmup)  # nothing else changed


@pytest.mark.parametrize("given, iterations, expected", [
    ("40%", 150, 60), ("12.5%", 100, 13), ("50%", 7, 4), ("0.1%", 150, 1), ("100%", 7, 7), (30, 150, 30)])
def test_a_percentage_rounds_to_the_nearest_iteration_halves_up_and_at_least_one(given, iterations, expected):
    assert sized_solver(Solver(stepsize=given), iterations).stepsize == expected


def test_max_iter_defaults_to_the_stage_length_and_integers_stay_as_given():
    solver = Solver(stepsize=30, stepvalue=(10, 20), step_size=5, warmup=Warmup(3))
    assert sized_solver(solver, 150) == Solver(stepsize=30, stepvalue=(10, 20), step_size=5, warmup=Warmup(3),
                                               max_iter=150)
    assert sized_solver(Solver(max_iter=40), 150).max_iter == 40


@pytest.mark.parametrize("solver, path, message", [
    ({"lr_policy": "step", "gamma": 0.1, "stepsize": "40"}, "$.solver.stepsize",
     "Argument `stepsize` must be a percentage of the stage's iterations, > 0% and <= 100%, such as \"40%\" or "
     "\"12.5%\". Received: stepsize='40'"),
    ({"lr_policy": "step", "gamma": 0.1, "stepsize": "0%"}, "$.solver.stepsize", "Received: stepsize='0%'"),
    ({"lr_policy": "triangular", "max_lr": 1, "step_size": "150%"}, "$.solver.step_size",
     "Received: step_size='150%'"),
    ({"lr_policy": "poly", "power": 1, "max_iter": "4e1%"}, "$.solver.max_iter", "Received: max_iter='4e1%'"),
    ({"warmup": {"warmup_steps": "5 %"}}, "$.solver.warmup.warmup_steps", "Received: warmup_steps='5 %'"),
    ({"lr_policy": "multistep", "gamma": 0.1, "stepvalue": ["50%", "half"]}, "$.solver.stepvalue[1]",
     "Received: stepvalue='half'"),
    ({"lr_policy": "multistep", "gamma": 0.1, "stepvalue": ["75%", "50%"]}, "$.solver.stepvalue",
     "Argument `stepvalue` must be strictly increasing. Received: stepvalue=['75%', '50%']"),
    ({"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [100, "50%"]}, "$.solver.stepvalue",
     "give every stepvalue in iterations or every one as a percentage of the stage's; got [100, '50%']"),
    ({"epochs": None, "lr_policy": "poly", "power": 1, "max_iter": "80%"}, "$.solver.max_iter",
     "'80%' is a share of the stage's length, which max_iter gives here (the solver has no `epochs`)"),
    ({"lr_policy": "multistep", "gamma": 0.1}, "$.solver.stepvalue",  # none at all (the fuzz test found it)
     "Argument `stepvalue` is required when policy='multistep'. Received: stepvalue=None"),
])
def test_a_wrong_percentage_is_a_spec_error_at_its_path(solver, path, message):
    with pytest.raises(SpecError) as caught:
        load_spec(spec(**solver))
    assert [where for where, _ in caught.value.errors] == [path]
    assert message in caught.value.errors[0][1]


def test_a_stage_percentage_is_checked_at_the_stage_and_kept_as_written():
    raw = spec(lr_policy="step", gamma=0.1, stepsize="40%")
    raw["stages"] = [{}, {"solver": {"lr_policy": "triangular", "max_lr": 1, "step_size": "1/4"}}]
    with pytest.raises(SpecError) as caught:
        load_spec(raw)
    assert [where for where, _ in caught.value.errors] == ["$.stages[1].solver.step_size"]

    raw["stages"][1]["solver"]["step_size"] = "25%"
    stages = to_dict(load_spec(raw))["stages"]  # as the run folder's spec.json has them
    assert [stage["solver"].get("stepsize") for stage in stages] == ["40%", "40%"]
    assert stages[1]["solver"]["step_size"] == "25%"


def test_stepvalue_percentages_that_a_short_stage_rounds_together_are_a_deep_error():
    raw = spec(epochs=1, batch_size=1024, lr_policy="multistep", gamma=0.1, stepvalue=["40%", "60%"])
    load_spec(raw)  # the quick checks cannot know the stage is 2 iterations long
    with pytest.raises(SpecError) as caught:
        validate(raw)
    [(path, message)] = caught.value.errors
    assert path == "$.solver.stepvalue"
    assert "must be strictly increasing" in message and "['40%', '60%'] of the stage's 2 iterations" in message


def test_each_stage_is_sized_to_its_own_length_and_poly_ends_at_the_stage_end():
    raw = spec(lr_policy="step", gamma=0.1)
    raw["stages"] = [{"name": "a", "solver": {"lr_policy": "poly", "power": 1}},  # no max_iter
                     {"name": "b", "solver": {"epochs": 1, "stepsize": "50%"}}]
    runner = Runner(load_spec(raw))
    runner.build()
    first, second = runner.plan()

    length = first.epochs * first.steps
    assert current_lr(runner.model, 0) == pytest.approx(0.1)
    assert current_lr(runner.model, length // 2) == pytest.approx(0.1 * (length - length // 2) / length, rel=1e-5)
    assert current_lr(runner.model, length - 1) == pytest.approx(0.1 / length, rel=1e-5)  # the last step: ~0
    assert current_lr(runner.model, length) == 0

    runner.enter_stage(1)
    half = share("50%", second.epochs * second.steps)
    assert current_lr(runner.model, half - 1) == pytest.approx(0.1)
    assert current_lr(runner.model, half) == pytest.approx(0.01)
    assert runner.spec.stages[1].solver.stepsize == "50%"  # the typed spec keeps what was written


@pytest.mark.parametrize("solver, iterations, epochs, keys, message", [
    (Solver(lr_policy="step", gamma=0.1, stepsize=500), 300, 10, ["stepsize"],
     "the LR never steps: stepsize 500 >= the stage's 300 iterations; give it as a share of the stage, "
     "such as \"40%\""),
    (Solver(lr_policy="step", gamma=0.5, stepsize=20), 300, 10, ["stepsize"],
     "the LR steps 14 times in the stage's 300 iterations (every 20), down to gamma^14 = 6.1e-05 x base_lr"),
    (Solver(lr_policy="sigmoid", gamma=-0.1, stepsize="100%"), 300, 10, ["stepsize"],
     "the LR never reaches the sigmoid's midpoint: stepsize 300 >= the stage's 300 iterations"),
    (Solver(lr_policy="multistep", gamma=0.1, stepvalue=(400, 500)), 300, 10, ["stepvalue"],
     "the LR never steps: the first stepvalue, 400, is >= the stage's 300 iterations"),
    (Solver(lr_policy="multistep", gamma=0.1, stepvalue=(100, 200, 300)), 300, 10, ["stepvalue"],
     "1 of the 3 stepvalues ([300]) come at or after the end of the stage's 300 iterations and never apply"),
    (Solver(lr_policy="triangular", max_lr=1, step_size=300), 300, 10, ["step_size"],
     "the LR never reaches max_lr: half a cycle, step_size 300, is >= the stage's 300 iterations"),
    (Solver(warmup=Warmup(1000)), 300, 10, ["warmup", "warmup_steps"],
     "the warmup lasts the whole stage and the policy never starts: warmup_steps 1000 >= the stage's 300 iterations"),
    (Solver(early_stopping=EarlyStopping(patience=2)), 300, 50, ["early_stopping", "patience"],
     "2 is under 10% of the stage's 50 epochs: a short stall stops the stage early; try 5 or more"),
])
def test_a_schedule_that_does_not_fit_its_stage_gets_a_warning(solver, iterations, epochs, keys, message):
    [(where, said)] = stage_warnings(solver, iterations, epochs)
    assert where == keys
    assert said.startswith(message)


@pytest.mark.parametrize("iterations", [20, 300, 300_000])
def test_a_schedule_in_percentages_fits_every_length_where_iterations_do_not(iterations):
    sized = [Solver(lr_policy="step", gamma=0.1, stepsize="30%"),
             Solver(lr_policy="multistep", gamma=0.1, stepvalue=("50%", "75%"), warmup=Warmup("5%")),
             Solver(lr_policy="sigmoid", gamma=-0.1, stepsize="50%"),
             Solver(lr_policy="triangular", max_lr=1, step_size="25%"),
             Solver(early_stopping=EarlyStopping(patience=2))]
    assert [stage_warnings(solver, iterations, epochs=20) for solver in sized] == [[]] * len(sized)
    # 90 is 30% of 300 iterations: it never steps in 20, and steps 3,333 times in 300,000.
    in_iterations = stage_warnings(Solver(lr_policy="step", gamma=0.1, stepsize=90), iterations, epochs=20)
    assert [keys for keys, _ in in_iterations] == ([] if iterations == 300 else [["stepsize"]])


def test_zoo_validate_prints_the_warnings_with_their_paths_and_exits_0(tmp_path, capsys):
    raw = spec(lr_policy="step", gamma=0.1)
    raw["stages"] = [{"name": "head", "solver": {"stepsize": "40%"}},
                     {"name": "all", "solver": {"epochs": 20, "stepsize": 100_000, "early_stopping": {"patience": 1}}}]
    path = write_spec(tmp_path, raw)

    validation = validate(path)

    length = 20 * validation.data.steps(32)
    assert validation.warnings == [
        ("$.stages[1].solver.stepsize", f"the LR never steps: stepsize 100000 >= the stage's {length} iterations; "
                                        "give it as a share of the stage, such as \"40%\""),
        ("$.stages[1].solver.early_stopping.patience", "1 is under 10% of the stage's 20 epochs: a short stall "
                                                       "stops the stage early; try 2 or more")]
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: valid (deep")
    assert err.splitlines() == [f"warning: {where}: {message}" for where, message in validation.warnings]
    assert main(["validate", "--quick", str(path)]) == 0  # the quick checks do not know the stage's length
    assert "warning:" not in capsys.readouterr().err


def test_train_warns_when_verbose_and_resumes_a_spec_in_percentages(tmp_path, recorded_fits, capsys):
    path = write_spec(tmp_path, spec(lr_policy="multistep", gamma=0.1, stepvalue=[100_000],
                                     warmup={"warmup_steps": "5%"}))
    with pytest.raises(KeyboardInterrupt):
        train(path, run_dir=tmp_path / "run", callbacks=[stop_after_one_epoch()], verbose=1)
    assert "warning: $.solver.stepvalue: the LR never steps" in capsys.readouterr().err
    written = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert written["stages"][0]["solver"]["warmup"]["warmup_steps"] == "5%"

    train(path, run_dir=tmp_path / "run", resume=True, verbose=0)  # the same spec: it goes on

    assert "warning:" not in capsys.readouterr().err
    [first, rest] = recorded_fits
    warmup = share("5%", 2 * first["steps"])
    assert first["lr"][:3] == pytest.approx([0.0, 0.1 * min(1, 3 / warmup), 0.1 * min(1, 6 / warmup)])
    assert rest["lr"] == first["lr"]  # the resumed stage compiles the same sized schedule
