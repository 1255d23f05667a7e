import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Two logical CPU devices, set before TensorFlow starts them.
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from zoo.train import train
    result = train(sys.argv[1], run_dir=sys.argv[2], verbose=1)
    print("RESULT " + json.dumps({
        "replicas": result.model.distribute_strategy.num_replicas_in_sync,
        "val_accuracy": result.history["val_accuracy"].tolist(),
        "lr": result.history["lr"].tolist()}))
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    spec = {
        "backbone": {"name": "small_cnn"}, "head": {"classes": 10}, "distribute": "mirrored",
        "slow": [{"match": "head_*", "lr_mult": 10}],
        "solver": {"base_lr": 0.05, "epochs": 2, "batch_size": 64, "lr_policy": "step",
                   "gamma": 0.5, "stepsize": 20},
        "data": {"builtin": "digits"},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "spec.json"), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 device(s)" in done.stdout
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["replicas"] == 2
    assert result["lr"] == pytest.approx([0.025, 0.0125])  # 23 steps an epoch: stepped at 20 and 40
    assert result["val_accuracy"][-1] > 0.5
