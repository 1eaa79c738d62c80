"""OBS Studio as the tests run it: Debian's `obs` under Xvfb, no human step.

`ObsStudio` writes a private configuration (`$XDG_CONFIG_HOME/obs-studio/`):
`global.ini` says the first-run wizard already ran (`FirstRun=true` with a
`LastVersion`: the name reads backwards), the preview is off and OBS lives in
the tray; one profile (`basic.ini`, `service.json` with a custom server and
key, `streamEncoder.json` in Advanced mode); one scene collection whose scene
plays a looping local clip (moving picture and a tone). Started with
`--startstreaming`, it publishes at once.

`stop_streaming` is the user's "Stop Streaming" button, sent over OBS's own
obs-websocket (5.x, bundled since OBS 28; enabled without a password on a
loopback port of the test's). Quitting OBS is not the same thing: OBS 29 under
Xvfb sometimes segfaults while it shuts down, before its output has sent the
unpublish. `stop` then ends the process (SIGINT, the rest of Xvfb's group
after).

Simple output mode leaves x264's keyframe interval at OBS's default "auto":
250 frames, 8.3 s at 30 fps. Advanced mode takes `keyint_sec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.control.api.service_process import free_port
from tests.e2e._media import poll

OBS_29_VERSION = (29 << 24) | (0 << 16) | 2
"""`LastVersion` in global.ini: MAJOR << 24 | MINOR << 16 | PATCH."""


def obs_available() -> bool:
    return shutil.which("obs") is not None and shutil.which("xvfb-run") is not None


def make_clip(path: Path, seconds: int = 10) -> Path:
    """The clip OBS's media source loops: testsrc2 and a 440 Hz tone, 640x360 30 fps."""
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
             "-c:a", "aac", str(path)],
            check=True,
        )  # fmt: skip
    return path


@dataclass
class ObsStudio:
    home: Path
    """A directory of its own: configuration, clip and log."""
    server: str
    """rtmp://HOST:PORT/live, rtmps://..., or srt://HOST:PORT?streamid=KEY."""
    key: str = ""
    keyint_sec: int | None = None
    """None: Simple output mode (OBS's default keyframe interval); else
    Advanced mode with this keyframe interval."""
    bitrate_kbps: int = 1200
    trust: Path | None = None
    """A PEM certificate OBS trusts for rtmps:// (a test's self-signed one)."""

    def __post_init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.log = self.home / "obs.log"
        self.websocket_port = free_port()

    # -- configuration ------------------------------------------------------------
    def configure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        root = self.home / "config" / "obs-studio"
        profile = root / "basic" / "profiles" / "P"
        scenes = root / "basic" / "scenes"
        profile.mkdir(parents=True, exist_ok=True)
        scenes.mkdir(parents=True, exist_ok=True)
        clip = make_clip(self.home / "clip.mp4")
        (root / "global.ini").write_text(
            "[General]\n"
            "FirstRun=true\n"
            f"LastVersion={OBS_29_VERSION}\n"
            "EnableAutoUpdates=false\n"
            "ConfirmOnExit=false\n\n"
            "[BasicWindow]\n"
            "PreviewEnabled=false\n"
            "SysTrayEnabled=true\n"
            "SysTrayWhenStarted=true\n"
            "SysTrayMinimizeToTray=true\n"
            "WarnBeforeStartingStream=false\n"
            "WarnBeforeStoppingStream=false\n\n"
            "[OBSWebSocket]\n"
            "FirstLoad=false\n"
            "ServerEnabled=true\n"
            f"ServerPort={self.websocket_port}\n"
            "AlertsEnabled=false\n"
            "AuthRequired=false\n"
        )
        if self.keyint_sec is None:
            output = (
                "[Output]\nMode=Simple\nReconnect=true\nRetryDelay=1\nMaxRetries=60\n\n"
                f"[SimpleOutput]\nVBitrate={self.bitrate_kbps}\nStreamEncoder=x264\n"
                "ABitrate=128\nPreset=veryfast\n"
            )
        else:
            output = (
                "[Output]\nMode=Advanced\nReconnect=true\nRetryDelay=1\nMaxRetries=60\n\n"
                "[AdvOut]\nEncoder=obs_x264\nTrackIndex=1\nApplyServiceSettings=true\n"
            )
            (profile / "streamEncoder.json").write_text(
                json.dumps(
                    {
                        "bitrate": self.bitrate_kbps,
                        "keyint_sec": self.keyint_sec,
                        "preset": "veryfast",
                        "rate_control": "CBR",
                        "tune": "zerolatency",
                    }
                )
            )
        (profile / "basic.ini").write_text(
            "[General]\nName=P\n\n" + output + "\n"
            "[Video]\nBaseCX=640\nBaseCY=360\nOutputCX=640\nOutputCY=360\n"
            "FPSType=0\nFPSCommon=30\n\n"
            "[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n"
        )
        (profile / "service.json").write_text(
            json.dumps(
                {
                    "type": "rtmp_custom",
                    "settings": {"server": self.server, "key": self.key, "use_auth": False},
                }
            )
        )
        scene_uuid, clip_uuid = (
            "0" * 8 + "-0000-4000-8000-" + "1" * 12,
            "2" * 8 + "-0000-4000-8000-" + "3" * 12,
        )
        item = {
            "name": "Clip",
            "source_uuid": clip_uuid,
            "visible": True,
            "locked": False,
            "id": 1,
            "pos": {"x": 0.0, "y": 0.0},
            "scale": {"x": 1.0, "y": 1.0},
            "rot": 0.0,
            "align": 5,
            "bounds_type": 0,
            "bounds": {"x": 0.0, "y": 0.0},
        }
        collection = {
            "name": "C",
            "current_scene": "S",
            "current_program_scene": "S",
            "scene_order": [{"name": "S"}],
            "sources": [
                {
                    "id": "scene",
                    "versioned_id": "scene",
                    "name": "S",
                    "uuid": scene_uuid,
                    "settings": {"id_counter": 1, "items": [item]},
                },
                {
                    "id": "ffmpeg_source",
                    "versioned_id": "ffmpeg_source",
                    "name": "Clip",
                    "uuid": clip_uuid,
                    "settings": {
                        "local_file": str(clip),
                        "is_local_file": True,
                        "looping": True,
                        "restart_on_activate": True,
                    },
                },
            ],
        }
        (scenes / "C.json").write_text(json.dumps(collection))

    # -- the process --------------------------------------------------------------
    async def start(self) -> None:
        assert self.proc is None
        self.configure()
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "LIBGL_ALWAYS_SOFTWARE": "1",
        }
        command: list[str] = []
        if self.trust is not None:
            # OBS's librtmp (mbedTLS) reads its roots from /etc/ssl/certs/ and
            # nowhere else: in a mount namespace of its own, that directory
            # holds the test's certificate, and the machine's is untouched
            certs = self.home / "certs"
            certs.mkdir(exist_ok=True)
            shutil.copy(self.trust, certs / "onair-test.pem")
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount --bind "$0" /etc/ssl/certs && exec "$@"', str(certs)]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                "xvfb-run", "-a", "-s", "-screen 0 1280x720x24",
                "obs", "--startstreaming", "--minimize-to-tray", "--multi",
                "--disable-updater", "--disable-shutdown-check",
                "--profile", "P", "--collection", "C", "--scene", "S",
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=str(self.home), start_new_session=True,
            )  # fmt: skip

    def log_text(self) -> str:
        """OBS's own log files (written line by line, so a crash loses nothing),
        else its stdout."""
        logs = sorted((self.home / "config" / "obs-studio" / "logs").glob("*.txt"))
        if logs:
            return "".join(f.read_text(errors="replace") for f in logs)
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def request(self, request_type: str, within: float = 10.0) -> dict[str, Any]:
        """One obs-websocket (RPC 1) request; its response's data, or AssertionError
        naming OBS's status comment."""
        url = f"ws://127.0.0.1:{self.websocket_port}"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, protocols=("obswebsocket.json",)) as ws,
        ):
            async with asyncio.timeout(within):
                hello = await ws.receive_json()
                assert hello["op"] == 0, hello
                await ws.send_json({"op": 1, "d": {"rpcVersion": 1}})
                identified = await ws.receive_json()
                assert identified["op"] == 2, identified
                await ws.send_json({"op": 6, "d": {"requestType": request_type, "requestId": "1"}})
                while True:
                    message = await ws.receive_json()
                    if message["op"] == 7 and message["d"]["requestId"] == "1":
                        break
        status = message["d"]["requestStatus"]
        assert status["result"], f"OBS refused {request_type}: {status}"
        return dict(message["d"].get("responseData") or {})

    async def stop_streaming(self, within: float = 15.0) -> None:
        """The "Stop Streaming" button: OBS's output unpublishes and closes; OBS
        keeps running."""
        await self.request("StopStream")

        async def status() -> dict[str, Any]:
            return await self.request("GetStreamStatus")

        await poll(
            status, lambda s: not s["outputActive"], within=within, what="OBS's output stopped"
        )

    async def stop(self, within: float = 15.0) -> None:
        """SIGINT to OBS (it stops streaming and exits), then the rest of Xvfb's group."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        pgrep = await asyncio.create_subprocess_exec(
            "pgrep", "-x", "-s", str(proc.pid), "obs", stdout=subprocess.PIPE
        )
        out, _ = await pgrep.communicate()
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()
