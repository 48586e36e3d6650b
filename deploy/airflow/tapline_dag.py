"""An Airflow DAG that runs one tapline pipeline a day.

tapline's contract with a scheduler is its exit code and the JSON line it prints with
`--json`: exit 0 when every record was accepted (skipped invalid ones allowed), 1 when a
record was rejected or failed or the run stopped, 2 for a usage or configuration error
(nothing sent). The task fails on anything but 0, and the JSON summary (counts, run ID,
rejects file) goes to XCom for the tasks after it.

What to change: the paths, the schedule, and where the secrets come from. The state lives
in a PostgreSQL database every worker reaches (TAPLINE_STATE, here from an Airflow
Variable; `--state-file` reads it from a mounted secret instead), so the task may run on any
worker and resume what a task on another left; the pipeline's lease there keeps one run at a
time even if Airflow starts two. Rejects files go to REJECTS_DIR, on storage the workers
share.
"""
import json
import os
import subprocess

import pendulum
from airflow.decorators import dag, task
from airflow.exceptions import AirflowException

PIPELINE = "/opt/tapline/pipelines/vip.yaml"
REJECTS_DIR = "/shared/tapline/rejects"


@dag(
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Kolkata"),
    catchup=False,
    max_active_runs=1,
)
def tapline_vip():
    @task
    def run_pipeline():
        from airflow.models import Variable

        env = dict(os.environ, TAPLINE_STATE=Variable.get("tapline_state_url"))
        done = subprocess.run(
            ["tapline", "run", PIPELINE, "--json", "--rejects-dir", REJECTS_DIR],
            capture_output=True,
            text=True,
            env=env,
        )
        print(done.stderr)
        summary = json.loads(done.stdout.splitlines()[0]) if done.stdout.strip() else {}
        if done.returncode != 0:
            raise AirflowException(
                f"tapline exited {done.returncode}: {summary.get('status')}, "
                f"{summary.get('stop_reason')}; records {summary.get('records')}"
            )
        return summary

    run_pipeline()


tapline_vip()
