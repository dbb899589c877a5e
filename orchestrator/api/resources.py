"""Typed keys of the aiohttp application: the resources the handlers use."""

from __future__ import annotations

import docker
from aiohttp import web

from orchestrator.api_key_store import KeyStore
from orchestrator.config import Settings
from orchestrator.database import Database
from orchestrator.events import EventBus
from orchestrator.metrics import Metrics
from orchestrator.queue import TaskQueue
from orchestrator.scheduler import Scheduler
from orchestrator.service import Service
from orchestrator.state import StateStore
from orchestrator.stores import StoreCalls, StoreRegistry
from orchestrator.worker import Worker

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
STATE = web.AppKey("state", StateStore)
STORES = web.AppKey("stores", StoreRegistry)
STORE_CALLS = web.AppKey("store_calls", StoreCalls)
QUEUE = web.AppKey("queue", TaskQueue)
EVENTS = web.AppKey("events", EventBus)
DOCKER = web.AppKey("docker", docker.DockerClient)
SCHEDULER = web.AppKey("scheduler", Scheduler)
WORKER = web.AppKey("worker", Worker)
KEYS = web.AppKey("keys", KeyStore)
SERVICE = web.AppKey("service", Service)
METRICS = web.AppKey("metrics", Metrics)

__all__ = [
    "DATABASE",
    "DOCKER",
    "EVENTS",
    "KEYS",
    "METRICS",
    "QUEUE",
    "SCHEDULER",
    "SERVICE",
    "SETTINGS",
    "STATE",
    "STORES",
    "STORE_CALLS",
    "WORKER",
]
