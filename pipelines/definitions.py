"""The Dagster definitions of qlik-user-watch: the one place where the pieces are wired."""

from dagster import Definitions, in_process_executor

from pipelines.assets import qlik_users, user_changes
from pipelines.health import pipeline_health_sensor
from pipelines.resources import AlertResource, QlikResource, UserStoreResource
from pipelines.schedules import build_schedule, qlik_user_watch_job
from pipelines.sensors import user_alert_sensor

defs = Definitions(
    assets=[qlik_users, user_changes],
    jobs=[qlik_user_watch_job],
    schedules=[build_schedule()],
    sensors=[user_alert_sensor, pipeline_health_sensor],
    resources={
        "qlik": QlikResource(),
        "user_store": UserStoreResource(),
        "alerts": AlertResource(),
    },
    # Each step is short and reads local files: running steps in one process saves about a
    # second and a half per run over a subprocess per step.
    executor=in_process_executor,
)
