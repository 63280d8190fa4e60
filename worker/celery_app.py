"""The Celery app and all of its policy in one place. Torch-free: the API imports it to publish.

Long GPU jobs shape every choice here: a message is acknowledged only after its job has ended
(`acks_late`), a worker takes one message at a time (prefetch 1), a worker child that dies gives
its message back (`reject_on_worker_lost`), and Redis's visibility timeout outlasts the longest job
so no second worker is handed a job still running. Messages are JSON and carry a job id only.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from kombu.exceptions import ChannelError

from darkroom.settings import Settings

GENERATE_TASK = "darkroom.generate"
# Webhook deliveries have their own queue and workers: a slow receiver never holds a GPU.
WEBHOOK_TASK = "darkroom.deliver_webhook"
WEBHOOK_QUEUE = "darkroom.webhooks"


def queue_for(model: str) -> str:
    """One queue per model, so each worker consumes exactly the models it holds resident."""
    return "darkroom.generate." + model.replace("/", "--")


def make_celery(settings: Settings) -> Celery:
    app = Celery("darkroom", broker=settings.resolved_broker_url, set_as_current=False)
    transport_options: dict[str, object] = {
        "visibility_timeout": settings.broker_visibility_timeout_s
    }
    transport = None  # the URL's
    if settings.broker_is_embedded:
        transport = "worker.filesystem_broker:Transport"  # atomic writes, unreadable files set aside
        queue_dir = (settings.data_dir / "broker").resolve()
        (queue_dir / "processed").mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "processed_folder": str(queue_dir / "processed"),
            "control_folder": str(queue_dir / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_transport=transport,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # Publishing happens inside an HTTP request: fail fast and tell the client.
        broker_connection_timeout=3,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        # The child loads its pipelines before it reports up; real weights take minutes.
        worker_proc_alive_timeout=settings.pipeline_load_timeout_s,
        task_queues=[Queue(queue_for(model)) for model in settings.models],
        worker_hijack_root_logger=False,
    )
    return app


def publish_generate(app: Celery, job_id: str, model: str) -> None:
    app.send_task(GENERATE_TASK, args=[job_id], queue=queue_for(model), retry=True)


def publish_webhook(app: Celery, event_id: str) -> None:
    app.send_task(WEBHOOK_TASK, args=[event_id], queue=WEBHOOK_QUEUE, retry=True)


def queue_length(app: Celery, queue: str) -> int:
    """Messages waiting in `queue` (not those a worker holds unacknowledged)."""
    with app.connection_for_write() as connection, connection.channel() as channel:
        try:
            return channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:  # Redis drops an empty queue's key: it does not exist
            return 0
