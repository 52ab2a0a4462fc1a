"""`entry_point`: the argv -> config -> exit code wrapper every script's `main` goes through."""

import pytest
from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.errors import DatasetError


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(3, description="how many items")


def make_main(job):
    return entry_point(JobConfig, "A test job.")(job)


def test_success_returns_the_jobs_exit_code_with_the_parsed_config():
    seen = []
    main = make_main(lambda cfg: seen.append(cfg.limit) or 1)
    assert main(["--limit", "7"]) == 1
    assert seen == [7]


def test_error_inside_the_job_gives_exit_2_and_problem_and_fix_on_stderr(capsys):
    def job(cfg):
        print("started")
        raise DatasetError("data.csv has no rows", "check --data")

    assert make_main(job)([]) == 2
    out, err = capsys.readouterr()
    assert out == "started\n"
    assert err == "error: data.csv has no rows\n  fix: check --data\n"


def test_bad_flag_gives_exit_2_before_the_job_runs(capsys):
    main = make_main(lambda cfg: pytest.fail("the job ran"))
    assert main(["--limit", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: command line: `limit`:") and "fix:" in err


def test_help_exits_0_without_running_the_job(capsys):
    main = make_main(lambda cfg: pytest.fail("the job ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "A test job." in capsys.readouterr().out
