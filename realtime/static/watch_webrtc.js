// Play a live stream over WHEP. Page: /watch/{playback_id}/webrtc?token=<JWT>
// Exposes window.onairStats = {state, playing, currentTime, width, height,
// nonBlack, luma, framesDecoded, error} for tests and debugging.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const parts = location.pathname.split("/").filter(Boolean);
  const playbackId = params.get("playback_id") ||
    (parts[0] === "watch" ? decodeURIComponent(parts[1] || "") : "");
  const token = params.get("token");
  const whepUrl = params.get("whep") || "/v1/whep/" + encodeURIComponent(playbackId);
  const video = $("video");
  const stats = {
    state: "loading", playing: false, currentTime: 0, width: 0, height: 0,
    nonBlack: false, luma: 0, framesDecoded: 0, error: null, mode: "webrtc",
  };
  window.onairStats = stats;
  let pc = null;
  let sessionUrl = null;
  let retryTimer = null;

  function setState(state, message) {
    stats.state = state;
    $("state").textContent = state;
    if (message !== undefined) $("message").textContent = message;
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

  function retry(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, ms);
  }

  async function connect() {
    if (pc) { pc.close(); pc = null; }
    setState("connecting");
    try {
      pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      const ms = new MediaStream();
      video.srcObject = ms;
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addEventListener("track", (ev) => { ms.addTrack(ev.track); video.play().catch(() => {}); });
      pc.addEventListener("connectionstatechange", () => {
        const s = pc && pc.connectionState;
        if (s === "connected") setState("connected", "");
        else if (s === "failed") { setState("failed", "connection failed, retrying"); retry(2000); }
      });
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringDone(pc, 2000);
      const headers = { "Content-Type": "application/sdp" };
      if (token) headers["Authorization"] = "Bearer " + token;
      const resp = await fetch(whepUrl, { method: "POST", headers, body: pc.localDescription.sdp });
      const body = await resp.text();
      if (resp.status !== 201) {
        let msg = body;
        try { msg = JSON.parse(body).error.message; } catch (e) { /* not JSON */ }
        stats.error = resp.status + ": " + msg;
        setState(resp.status === 404 ? "offline" : "error", msg);
        if (resp.status === 404 || resp.status >= 500) retry(2000);
        return;
      }
      sessionUrl = new URL(resp.headers.get("Location"), new URL(whepUrl, location.href)).href;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
    } catch (e) {
      stats.error = String(e && e.message || e);
      setState("error", stats.error);
      retry(3000);
    }
  }

  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 36;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  setInterval(async () => {
    stats.currentTime = video.currentTime;
    stats.playing = !video.paused && video.readyState >= 2 && video.currentTime > 0;
    stats.width = video.videoWidth;
    stats.height = video.videoHeight;
    $("size").textContent = stats.width ? stats.width + "x" + stats.height : "–";
    if (stats.width) {
      try {
        ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
        const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let sum = 0;
        for (let i = 0; i < px.length; i += 4) sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        stats.luma = sum / (px.length / 4);
        stats.nonBlack = stats.luma > 16;
      } catch (e) { /* not drawable yet */ }
    }
    if (pc) {
      const report = await pc.getStats();
      report.forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "video") stats.framesDecoded = r.framesDecoded || 0;
      });
    }
  }, 250);

  $("unmute").addEventListener("click", () => { video.muted = false; video.play().catch(() => {}); });
  // ending the session needs the credential that created it (a signed id's token)
  const owner = token ? { Authorization: "Bearer " + token } : {};
  window.addEventListener("pagehide", () => {
    if (sessionUrl) fetch(sessionUrl, { method: "DELETE", keepalive: true, headers: owner });
  });
  stats.stop = async () => {
    if (sessionUrl) await fetch(sessionUrl, { method: "DELETE", headers: owner });
    sessionUrl = null;
    if (pc) pc.close();
    pc = null;
  };
  if (!playbackId) setState("error", "no playback id in the URL");
  else {
    // the view, reported like the HLS page's (beacons; WHEP carries no CMCD)
    if (window.onairMonitor) {
      stats.monitor = onairMonitor(null, video, { playbackId: playbackId, token: token || "", player: "webrtc" });
    }
    connect();
  }
})();
