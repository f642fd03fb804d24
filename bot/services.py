"""Moved to :mod:`bot.operations` (services, decisions, status); kept while the worker's
runner is being split. Remove with its last import."""

from bot.operations.decisions import TaskService, jsonable
from bot.operations.services import GitHubFor, RepoConfigs, Services, build_services
from bot.operations.status import STATE_LABEL_PREFIX, STATE_LABELS, StatusReporter

__all__ = ["GitHubFor", "RepoConfigs", "STATE_LABELS", "STATE_LABEL_PREFIX", "Services", "StatusReporter", "TaskService", "build_services", "jsonable"]
