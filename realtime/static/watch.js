// onair watch page: plays /play/{playback_id}.m3u8 with hls.js in low-latency mode,
// shows the live latency and recovers from errors by itself. It reports the view:
// CMCD on every request (as CMCD-* headers: same origin, so no preflight, and
// caches keep one copy) and beacons through onair-monitor.js, one session id for both.
// Tests read window.onairStats = {latency, hlsLatency, playing, currentTime, errors, ...}.
(function () {
  "use strict";
  var video = document.getElementById("video");
  var $ = function (id) { return document.getElementById(id); };
  var parts = location.pathname.split("/").filter(Boolean);
  var playbackId = decodeURIComponent(parts[parts.length - 1] || "");
  var token = new URLSearchParams(location.search).get("token");
  var src = "/play/" + encodeURIComponent(playbackId) + ".m3u8" + (token ? "?token=" + encodeURIComponent(token) : "");

  var stats = window.onairStats = {
    playbackId: playbackId, src: src, latency: null, hlsLatency: null, playing: false,
    currentTime: 0, errors: [], fatalErrors: 0, recoveries: 0, ended: false, engine: null,
  };
  var hls = null;
  var monitor = null;
  var sessionId = (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
    : "s-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  stats.sessionId = sessionId;
  var networkRetries = 0;
  var lastMediaRecovery = 0;
  var lastProgress = { t: 0, at: Date.now() };

  function setState(s, message) {
    $("state").textContent = s;
    $("state").className = "pill " + s;
    if (message !== undefined) $("message").textContent = message;
  }

  function pushError(e) {
    stats.errors.push(e);
    if (stats.errors.length > 50) stats.errors.shift();
  }

  function create() {
    if (window.Hls && Hls.isSupported()) {
      stats.engine = "hls.js " + Hls.version;
      hls = new Hls({
        lowLatencyMode: true,
        backBufferLength: 30,
        // 1 = hls.js leaves playbackRate alone; catchUp() below owns it. With > 1, hls.js
        // resets the rate to 1 on every timeupdate while <= 1 s is buffered, i.e. always at
        // sub-second latency, which undid catchUp's nudge (bench/glass_to_glass.py).
        maxLiveSyncPlaybackRate: 1,
        liveSyncOnStallIncrease: 0.3,  // a stall adds 0.3 s of target latency (default 1 s)
        liveDurationInfinity: true,
        cmcd: { sessionId: sessionId, contentId: playbackId, useHeaders: true },
        manifestLoadPolicy: { default: { maxTimeToFirstByteMs: 10000, maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: { maxNumRetry: 6, retryDelayMs: 500, maxRetryDelayMs: 4000 } } },
      });
      hls.on(Hls.Events.MANIFEST_PARSED, function () { networkRetries = 0; play(); });
      hls.on(Hls.Events.FRAG_BUFFERED, function () { networkRetries = 0; });
      hls.on(Hls.Events.LEVEL_UPDATED, function (_e, data) {
        if (data.details && !data.details.live) { stats.ended = true; }
        if (data.details) holdBack = data.details.partHoldBack || data.details.holdBack || 0;
      });
      hls.on(Hls.Events.ERROR, onError);
      window.onairHls = hls;
      hls.loadSource(src);
      hls.attachMedia(video);
      monitorWith(hls);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      stats.engine = "native";
      video.src = src;  // Safari: native LL-HLS
      monitorWith(null);
      play();
    } else {
      setState("error", "this browser cannot play HLS (hls.js missing? run deploy/vendor-js.sh)");
    }
  }

  // a player made again (recreate) goes on with the same view: the gap is a stall
  function monitorWith(player) {
    if (!window.onairMonitor) return;
    var resumed = monitor !== null;
    if (monitor) monitor.detach();
    monitor = onairMonitor(player, video, { playbackId: playbackId, sessionId: sessionId,
      token: token || "", resumed: resumed });
  }

  function onError(_event, data) {
    pushError({ type: data.type, details: data.details, fatal: !!data.fatal, at: Date.now() });
    if (data.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) lastStall = Date.now();
    if (!data.fatal) return;
    stats.fatalErrors += 1;
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
      var delay = Math.min(8000, 500 * Math.pow(2, networkRetries++));
      setState("reconnecting", "network error, retrying in " + (delay / 1000).toFixed(1) + " s");
      setTimeout(function () {
        stats.recoveries += 1;
        if (networkRetries > 6) { recreate(); } else if (hls) { hls.startLoad(); }
      }, delay);
    } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      stats.recoveries += 1;
      var now = Date.now();
      if (now - lastMediaRecovery < 3000) { hls.swapAudioCodec(); }
      lastMediaRecovery = now;
      setState("recovering", "media error, recovering");
      hls.recoverMediaError();
    } else {
      setState("recovering", "player error, restarting");
      setTimeout(recreate, 1000);
    }
  }

  function recreate() {
    stats.recoveries += 1;
    networkRetries = 0;
    if (hls) { hls.destroy(); hls = null; }
    create();
  }

  function play() {
    var p = video.play();
    if (p && p.catch) p.catch(function () { video.muted = true; video.play().catch(function () {}); });
  }

  function tick() {
    stats.currentTime = video.currentTime;
    stats.playing = !video.paused && !video.ended && video.readyState >= 3 && video.currentTime > 0;
    var date = null;
    if (hls && hls.playingDate) date = hls.playingDate;
    else if (video.getStartDate && !isNaN(video.getStartDate().getTime()))
      date = new Date(video.getStartDate().getTime() + video.currentTime * 1000);
    stats.latency = date ? (Date.now() - date.getTime()) / 1000 : null;
    stats.hlsLatency = hls && isFinite(hls.latency) ? hls.latency : null;
    $("latency").textContent = stats.latency === null ? "–" : stats.latency.toFixed(2) + " s";
    $("edge").textContent = stats.hlsLatency === null ? "–" : stats.hlsLatency.toFixed(2) + " s";
    catchUp();
    if (stats.ended && video.ended) setState("ended", "the broadcast is over");
    else if (stats.playing) setState("live", "");
    // Stall watchdog: no progress for 6 s while live -> jump to the live edge / restart.
    if (video.currentTime !== lastProgress.t) { lastProgress = { t: video.currentTime, at: Date.now() }; }
    else if (!stats.ended && Date.now() - lastProgress.at > 6000 && hls) {
      lastProgress.at = Date.now();
      pushError({ type: "stall", details: "no progress", fatal: false, at: Date.now() });
      if (hls.liveSyncPosition) { video.currentTime = hls.liveSyncPosition; play(); }
      else { recreate(); }
    }
  }

  // Live-edge keeping. hls.js starts at an independent part (a keyframe), so it can
  // begin up to a GOP behind its target latency, and it only speeds up while more
  // than 1 s is buffered, which never happens at sub-second latency. Jump once
  // into the buffer right after start, then nudge the playback rate.
  var jumped = false;
  function catchUp() {
    if (!hls || !stats.playing || stats.ended || !isFinite(hls.latency) || !hls.targetLatency) return;
    forgiveStalls();
    var excess = hls.latency - hls.targetLatency;
    var sync = hls.liveSyncPosition;
    var end = video.buffered.length ? video.buffered.end(video.buffered.length - 1) : 0;
    if (!jumped && excess > 0.3 && sync && sync < end - 0.1) {
      jumped = true;
      video.currentTime = sync;
      return;
    }
    var ahead = end - video.currentTime;
    if (excess > 1 && ahead > 1) video.playbackRate = 1.25;  // far behind: what hls.js did
    else if (excess > 0.15 && ahead > 0.3) video.playbackRate = 1.1;
    else if (excess < 0.05 || end - video.currentTime < 0.2) video.playbackRate = 1.0;
    stats.targetLatency = hls.targetLatency;
  }

  // hls.js adds liveSyncOnStallIncrease to its target latency on every stall and never
  // takes it back (up to a target duration): a few hiccups early on would keep a viewer
  // up to 2 s further behind for the rest of the session. After 10 s without a stall, go
  // back to the playlist's PART-HOLD-BACK (the setter also zeroes hls.js's stall count),
  // and follow a PART-HOLD-BACK that grows once we have set it.
  var lastStall = 0, holdBack = 0;
  function forgiveStalls() {
    if (!holdBack) return;
    var fixed = hls.config.liveSyncDuration;
    if (fixed !== undefined && fixed < holdBack - 0.001) { hls.targetLatency = holdBack; return; }
    if (Date.now() - lastStall > 10000 && hls.targetLatency > holdBack + 0.05) {
      hls.targetLatency = holdBack;
      stats.stallPenaltyResets = (stats.stallPenaltyResets || 0) + 1;
    }
  }

  video.addEventListener("playing", function () { setState("live", ""); });
  video.addEventListener("waiting", function () { if (!stats.ended) setState("buffering"); });
  setInterval(tick, 250);
  create();
})();
