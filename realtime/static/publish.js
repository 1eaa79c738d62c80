// Publish camera + microphone over WHIP (RFC 9725) to /v1/whip.
// Page: /publish/{live_stream_id}?key=<stream key>&autostart=1
// Exposes window.onairPublish = {state, codec, location, error, start(), stop()}.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const parts = location.pathname.split("/").filter(Boolean);
  const liveStreamId = parts[0] === "publish" ? decodeURIComponent(parts[1] || "") : "";
  const whipUrl = params.get("whip") || "/v1/whip";
  const status = { state: "idle", codec: "", location: null, error: null, framesSent: 0 };
  window.onairPublish = status;
  let pc = null;
  let stream = null;

  $("stream-id").textContent = liveStreamId;
  if (params.get("key")) $("key").value = params.get("key");

  function setState(state, message) {
    status.state = state;
    $("state").textContent = state;
    $("state").className = "pill" + (state === "live" ? " live" : "");
    if (message !== undefined) $("message").textContent = message;
  }

  function iceServersFromLinks(headers) {
    // Link: <stun:host:port>; rel="ice-server"; username="u"; credential="c"
    const servers = [];
    const raw = headers.get("Link");
    if (!raw) return servers;
    for (const part of raw.split(/,(?=\s*<)/)) {
      const m = part.match(/<([^>]+)>/);
      if (!m || !/rel="?ice-server"?/.test(part)) continue;
      const s = { urls: m[1] };
      const u = part.match(/username="([^"]*)"/);
      const c = part.match(/credential="([^"]*)"/);
      if (u) s.username = u[1];
      if (c) s.credential = c[1];
      servers.push(s);
    }
    return servers;
  }

  function preferH264(transceiver) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpSender.getCapabilities) return;
    const caps = RTCRtpSender.getCapabilities("video");
    if (!caps) return;
    const h264 = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264" &&
      /packetization-mode=1/.test(c.sdpFmtpLine || "") && /profile-level-id=42/.test(c.sdpFmtpLine || ""));
    const rest = caps.codecs.filter((c) => !h264.includes(c));
    if (h264.length) transceiver.setCodecPreferences(h264.concat(rest));
  }

  function gatheringDone(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async function start() {
    const key = $("key").value.trim();
    if (!key) { setState("idle", "paste the stream key first"); return; }
    $("start").disabled = true;
    status.error = null;
    try {
      setState("camera");
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
        audio: true,
      });
      $("preview").srcObject = stream;
      let iceServers = [];
      try {
        const opt = await fetch(whipUrl, { method: "OPTIONS" });
        iceServers = iceServersFromLinks(opt.headers);
      } catch (e) { /* no Link headers: host candidates only */ }
      pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
      pc.addEventListener("connectionstatechange", () => {
        const s = pc.connectionState;
        if (s === "connected") setState("live", "");
        else if (s === "failed" || s === "disconnected") setState(s, "connection " + s);
      });
      for (const track of stream.getTracks()) {
        const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        if (track.kind === "video") {
          preferH264(t);
          if ("contentHint" in track) track.contentHint = "motion";
        }
      }
      setState("connecting");
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringDone(pc, 2000);
      const resp = await fetch(whipUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + key },
        body: pc.localDescription.sdp,
      });
      const body = await resp.text();
      if (resp.status !== 201) {
        let msg = body;
        try { msg = JSON.parse(body).error.message; } catch (e) { /* not JSON */ }
        throw new Error(resp.status + ": " + msg);
      }
      status.location = new URL(resp.headers.get("Location"), new URL(whipUrl, location.href)).href;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      const m = body.match(/a=rtpmap:\d+ (H264|VP8|VP9|AV1)\/90000/i);
      status.codec = m ? m[1] : "";
      $("codec").textContent = status.codec;
      for (const sender of pc.getSenders()) {
        if (sender.track && sender.track.kind === "video") {
          const p = sender.getParameters();
          p.degradationPreference = "maintain-resolution";
          sender.setParameters(p).catch(() => {});
        }
      }
      $("stop").disabled = false;
      setInterval(async () => {
        if (!pc) return;
        const stats = await pc.getStats();
        stats.forEach((r) => {
          if (r.type === "outbound-rtp" && r.kind === "video") status.framesSent = r.framesEncoded || 0;
        });
      }, 1000);
    } catch (e) {
      status.error = String(e && e.message || e);
      setState("error", status.error);
      await stop(false);
    }
  }

  async function stop(resetState = true) {
    $("stop").disabled = true;
    $("start").disabled = false;
    if (status.location) {
      const key = $("key").value.trim();
      try {
        await fetch(status.location, { method: "DELETE", headers: { "Authorization": "Bearer " + key } });
      } catch (e) { /* the server drops the session on ICE timeout anyway */ }
      status.location = null;
    }
    if (pc) { pc.close(); pc = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    if (resetState) setState("stopped", "");
  }

  status.start = start;
  status.stop = stop;
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop());
  window.addEventListener("pagehide", () => {
    if (status.location) {
      fetch(status.location, {
        method: "DELETE",
        keepalive: true,
        headers: { "Authorization": "Bearer " + $("key").value },
      });
    }
  });
  if (params.get("autostart") === "1" && $("key").value) start();
})();
