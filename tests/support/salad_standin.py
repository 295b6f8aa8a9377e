"""A local stand-in for the part of SaladCloud's public API that RelayMD uses (ADR 0025):
organizations/{o}/gpu-classes, .../projects/{p}/containers (GET, POST), .../containers/{name} (GET,
PATCH with application/merge-patch+json, DELETE), .../start, .../stop, .../instances, all
behind the `Salad-Api-Key` header, with the shapes of SaladCloud's OpenAPI description.

Its replicas are real processes: each runs the container group's `command` with the group's
environment plus SALAD_MACHINE_ID and SALAD_CONTAINER_GROUP_ID (a fresh machine for every
start, as a reallocated node would be; listed "creating" for `start_delay_s` first), in
a private temporary folder of its own: no filesystem is shared with the daemon. The image is
not pulled (the worker is this checkout's `relaymd-worker`); it must be one the stand-in was
told exists. With `interrupt_mean_s`, a seeded RNG SIGKILLs a running replica at random
moments; restart_policy `always` starts a new one on a new "machine"."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PATH = re.compile(
    r"^/organizations/(?P<org>[^/]+)(?:/gpu-classes|/projects/(?P<project>[^/]+)"
    r"/containers(?:/(?P<group>[^/]+)(?:/(?P<action>start|stop|instances))?)?)$"
)
# What GET /organizations/{o}/gpu-classes lists (ids are SaladCloud's UUIDs).
GPU_CLASSES = [
    {"id": "ed563892-aacd-40f5-80b7-90c9be6c759b", "name": "RTX 4090 (24 GB)"},
    {"id": "a5db5c50-cbcb-4596-ae80-6a0c8090d80f", "name": "RTX 3090 (24 GB)"},
]


@dataclass
class Replica:
    machine_id: str
    instance_id: str
    folder: Path
    due: float  # time.monotonic() when its container starts (listed "creating" until then)
    proc: subprocess.Popen[bytes] | None = None
    update_time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> str:
        """As SaladCloud lists it: creating until the container runs, stopping once it died
        (until the next reconcile drops it and, with restart policy always, allocates anew)."""
        if self.proc is None:
            return "creating"
        return "running" if self.proc.poll() is None else "stopping"


@dataclass
class Group:
    body: dict[str, Any]  # the ContainerGroup as the API returns it
    replicas: list[Replica] = field(default_factory=list)
    started: int = 0  # replica processes started, ever
    killed: int = 0  # replicas interrupted by the stand-in


class SaladStandin:
    def __init__(
        self,
        *,
        api_key: str,
        organization: str,
        project: str,
        images: set[str],
        root: Path,
        extra_path: str,
        interrupt_mean_s: float | None = None,
        seed: int = 0,
        idle_replicas: bool = False,
        start_delay_s: float = 0.0,
    ) -> None:
        self.api_key, self.organization, self.project = api_key, organization, project
        self.images, self.root, self.extra_path = images, root, extra_path
        self.interrupt_mean_s, self.rng = interrupt_mean_s, random.Random(seed)
        # For tests of provisioning alone: replicas are real processes that only sleep.
        self.idle_replicas = idle_replicas
        # Allocation and image pull before a replica's container starts (listed "creating").
        self.start_delay_s = start_delay_s
        self.groups: dict[str, Group] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) for the tests to read
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._reconcile_loop, daemon=True),
        ]

    def __enter__(self) -> SaladStandin:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self._threads[1].join(timeout=30)
        with self.lock:
            for group in self.groups.values():
                self._scale(group, 0)

    # --- replicas -----------------------------------------------------------------------
    def _new_replica(self) -> Replica:
        folder = Path(tempfile.mkdtemp(prefix="salad-node-", dir=self.root))
        due = time.monotonic() + self.start_delay_s
        return Replica(str(uuid.uuid4()), str(uuid.uuid4()), folder, due)

    def _launch(self, group: Group, replica: Replica) -> None:
        container, folder = group.body["container"], replica.folder
        env = {"PATH": f"{self.extra_path}:{os.environ.get('PATH', '')}", "HOME": str(folder)}
        env.update(container.get("environment_variables") or {})
        # What SaladCloud sets in every container (a new machine id per allocation).
        env.update(
            SALAD_MACHINE_ID=replica.machine_id, SALAD_CONTAINER_GROUP_ID=group.body["id"],
            SALAD_CONTAINER_GROUP_NAME=group.body["name"], TMPDIR=str(folder),
        )  # fmt: skip
        log = open(folder / "container.log", "ab")  # noqa: SIM115 - lives with the process
        argv = ["sleep", "3600"] if self.idle_replicas else container["command"]
        replica.proc = subprocess.Popen(
            argv, cwd=folder, env=env, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        replica.update_time = datetime.now(UTC).isoformat()
        group.started += 1

    @staticmethod
    def _kill(replica: Replica) -> None:
        if replica.proc is None:
            return
        if replica.proc.poll() is None:
            os.killpg(replica.proc.pid, signal.SIGKILL)
        replica.proc.wait()

    def _scale(self, group: Group, wanted: int) -> None:
        group.replicas = [r for r in group.replicas if r.alive()]  # restart policy always
        while len(group.replicas) > wanted:
            self._kill(group.replicas.pop(self.rng.randrange(len(group.replicas))))
        while len(group.replicas) < wanted:
            group.replicas.append(self._new_replica())
        for replica in group.replicas:
            if replica.proc is None and time.monotonic() >= replica.due:
                self._launch(group, replica)

    def _running(self, group: Group) -> bool:
        return str(group.body["current_state"]["status"]) == "running"

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                for group in self.groups.values():
                    self._maybe_interrupt(group)
                    self._scale(group, group.body["replicas"] if self._running(group) else 0)

    def _maybe_interrupt(self, group: Group) -> None:
        live = [r for r in group.replicas if r.running()]
        if self.interrupt_mean_s is None or not live:
            return
        # Poisson arrivals: the chance of an interruption in this 0.2 s tick.
        if self.rng.random() < 0.2 / self.interrupt_mean_s:
            victim = live[self.rng.randrange(len(live))]
            self._kill(victim)
            group.killed += 1

    def kill_one(self, name: str) -> str | None:
        """SIGKILL one running replica chosen by the seeded RNG; its machine id."""
        with self.lock:
            live = [r for r in self.groups[name].replicas if r.running()]
            if not live:
                return None
            victim = live[self.rng.randrange(len(live))]
            self._kill(victim)
            self.groups[name].killed += 1
            return victim.machine_id

    def replica_folders(self, name: str) -> list[Path]:
        with self.lock:
            return [r.folder for r in self.groups[name].replicas]

    def cleanup(self) -> None:
        for folder in self.root.glob("salad-node-*"):
            shutil.rmtree(folder, ignore_errors=True)

    # --- HTTP -----------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _serve(self, method: str) -> None:
                standin.requests.append((method, self.path))
                if self.headers.get("Salad-Api-Key") != standin.api_key:
                    return self._reply(401, {"title": "Unauthorized", "status": 401})
                match = PATH.match(self.path.split("?", 1)[0])
                if match is None:
                    return self._reply(404, {"title": "Not Found", "status": 404})
                org, project = match["org"], match["project"] or standin.project
                if (org, project) != (standin.organization, standin.project):
                    return self._reply(404, {"title": "Not Found", "status": 404})
                with standin.lock:
                    status, body = standin.route(method, match, self)
                self._reply(status, body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    def route(self, method: str, match: re.Match[str], handler: Any) -> tuple[int, Any]:
        name, action = match["group"], match["action"]
        if match["project"] is None:
            return (200, {"items": GPU_CLASSES})
        if name is None:
            if method == "GET":
                return (200, {"items": [g.body for g in self.groups.values()]})
            return self._create(handler._body())
        group = self.groups.get(name)
        if group is None:
            return (404, {"title": "Not Found", "status": 404})
        if action == "instances":
            return (200, {"instances": self._instances(group)})
        if action in ("start", "stop"):
            group.body["current_state"]["status"] = "running" if action == "start" else "stopped"
            return (202, None)
        if method == "PATCH":
            if handler.headers.get("Content-Type") != "application/merge-patch+json":
                return (415, {"title": "Unsupported Media Type", "status": 415})
            return self._patch(group, handler._body())
        if method == "DELETE":
            self._scale(group, 0)
            del self.groups[name]
            return (202, None)
        return (200, group.body)

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        problem = self._invalid(body.get("container") or {}, body.get("replicas"))
        if problem or not re.fullmatch(r"[a-z][a-z0-9-]{0,61}[a-z0-9]", body.get("name", "")):
            return (400, {"title": "Bad Request", "status": 400, "detail": problem or "name"})
        if body["name"] in self.groups:
            return (409, {"title": "Conflict", "status": 409})
        now = datetime.now(UTC).isoformat()
        status = "running" if body.get("autostart_policy") else "stopped"
        group = {
            **body, "id": str(uuid.uuid4()), "organization_name": self.organization,
            "project_name": self.project, "create_time": now, "update_time": now,
            "version": 1, "current_state": {"status": status}, "pending_change": False,
        }  # fmt: skip
        self.groups[body["name"]] = Group(body=group)
        return (201, group)

    def _patch(self, group: Group, patch: dict[str, Any]) -> tuple[int, Any]:
        container = {**group.body["container"], **(patch.get("container") or {})}
        replicas = patch.get("replicas", group.body["replicas"])
        problem = self._invalid(container, replicas)
        if problem:
            return (400, {"title": "Bad Request", "status": 400, "detail": problem})
        if patch.get("container"):
            # A new container means new replicas, as SaladCloud redeploys on a change.
            self._scale(group, 0)
            group.body["version"] += 1
        group.body.update(container=container, replicas=replicas)
        return (200, group.body)

    def _invalid(self, container: dict[str, Any], replicas: Any) -> str | None:
        if container.get("image") not in self.images:
            return f"image {container.get('image')!r} cannot be pulled"
        if not isinstance(replicas, int) or not 0 <= replicas <= 500:
            return "replicas must be an integer from 0 to 500"
        resources = container.get("resources") or {}
        if not 1 <= int(resources.get("cpu", 0)) <= 1024 or int(resources.get("memory", 0)) < 1024:
            return "resources: cpu 1-1024, memory >= 1024 MB"
        return None

    def _instances(self, group: Group) -> list[dict[str, Any]]:
        """ContainerGroupInstance: a replica that vanished is no longer listed."""
        return [
            {"instance_id": r.instance_id, "machine_id": r.machine_id, "state": r.state(),
             "update_time": r.update_time, "version": group.body["version"],
             "ready": r.running(), "started": r.running()}
            for r in group.replicas
        ]  # fmt: skip
