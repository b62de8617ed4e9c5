"""The crash-resume test of the example agent (docs/testing.md). Run: ``pytest`` in this
directory (with ckdb[testing] installed, the fixtures come from ckdb's pytest plugin)."""

from ckdb.testing import KillPoint


def test_agent_survives_crashes(crash_resume):
    report = crash_resume("agent:run", random_kills=5, seed=1)
    assert report.ok
    assert len(report.reference_points) == 6 * 4  # 2 checkpoints + 1 effect (2 points each) x 4


def test_replay_a_schedule(crash_resume):
    # Kill after the first post, then again before the resumed run's first checkpoint.
    runner = crash_resume.runner("agent:run")
    with runner:
        trial = runner.replay([KillPoint("after-effect", 1), KillPoint("before-checkpoint", 1)])
    assert trial.ok, trial.problem


def test_store_fixture(ckdb_store):
    ckdb_store.create("wf", "plan", state={"task": {"goal": "demo"}})
    assert ckdb_store.latest("wf").phase == "plan"
