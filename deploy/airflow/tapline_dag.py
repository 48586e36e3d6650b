"""An Airflow DAG that runs one tapline pipeline a day.

tapline's contract with a scheduler is its exit code and the JSON line it prints with
`--json`: exit 0 when every record was accepted (skipped invalid ones allowed), 1 when a
record was rejected or failed or the run stopped, 2 for a usage or configuration error
(nothing sent). The task fails on anything but 0, and the JSON summary (counts, run ID,
rejects file) goes to XCom for the tasks after it.

What to change: the paths, the schedule, and where the secrets come from. The state folder
must be on storage every worker that may run the task sees, and the DAG must not run twice
at once (max_active_runs=1): the SQLite state store is for one process at a time.
"""
import json
import subprocess

import pendulum
from airflow.decorators import dag, task
from airflow.exceptions import AirflowException

PIPELINE = "/opt/tapline/pipelines/vip.yaml"
STATE_DIR = "/opt/tapline/state"


@dag(
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Kolkata"),
    catchup=False,
    max_active_runs=1,
)
def tapline_vip():
    @task
    def run_pipeline():
        done = subprocess.run(
            ["tapline", "run", PIPELINE, "--json", "--state-dir", STATE_DIR],
            capture_output=True,
            text=True,
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
