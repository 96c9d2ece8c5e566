from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")

app = Celery("guardweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Generation and training go to `gpu`; everything else to `default`. A worker
# started for `gpu` uses CUDA when the machine has it, else the CPU.
app.conf.task_queues = (Queue("default"), Queue("gpu"))
app.autodiscover_tasks()
