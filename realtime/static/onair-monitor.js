// onair viewer monitor: reports one viewer's playback to onair as beacons
// (POST /beacon/{playback_id}), so GET /v1/views shows startup time, rebuffering,
// errors and renditions for players on any page.
//
//   <script src="https://ONAIR/static/onair-monitor.js"></script>
//   var hls = new Hls({ cmcd: { sessionId: sid, contentId: playbackId } });  // optional CMCD
//   onairMonitor(hls, video, { playbackId: "...", sessionId: sid });
//
// hls may be null (native HLS, WebRTC): the <video> element's events are enough.
// Options: playbackId (required), sessionId (default: hls.js's CMCD session id, else
// a random one), token (signed playback ids; default: ?token= of hls.url), origin
// (where onair is; default: hls.url's origin, else this page's), player (name),
// resumed (true: the same view goes on with a new player: no `start`, and the
// time until it plays is a stall).
// Events are sent when they happen (fetch keepalive, text/plain: no preflight) and
// every 10 s as a heartbeat; `end` goes with navigator.sendBeacon on pagehide.
(function (root) {
  "use strict";

  var HEARTBEAT_MS = 10000;
  var MAX_ERRORS = 50;
  var QUIET_ERRORS = { bufferStalledError: 1, bufferNudgeOnStall: 1, bufferSeekOverHole: 1 };

  function randomId() {
    if (root.crypto && root.crypto.randomUUID) return root.crypto.randomUUID();
    return "s-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
  }

  function sourceUrl(hls) {
    try { return hls && hls.url ? new URL(hls.url, root.location.href) : null; } catch (e) { return null; }
  }

  function onairMonitor(hls, video, options) {
    options = options || {};
    if (!options.playbackId) throw new Error("onairMonitor: playbackId is required");
    var src = sourceUrl(hls);
    var cmcd = hls && hls.config && hls.config.cmcd;
    var sessionId = options.sessionId || (cmcd && cmcd.sessionId) || randomId();
    var token = options.token || (src && src.searchParams.get("token")) || "";
    var origin = options.origin || (src ? src.origin : root.location.origin);
    var url = origin + "/beacon/" + encodeURIComponent(options.playbackId) +
      (token ? "?token=" + encodeURIComponent(token) : "");
    var queue = [];
    var state = { firstFrame: false, stalled: false, ended: false, errors: 0, level: null };
    var timer = null;

    // latency to live: now minus the program date time playing (hls.js), when known
    function latency() {
      var level = hls && hls.levels && hls.levels[hls.currentLevel];
      var date = level && level.details && level.details.live ? hls.playingDate : null;
      if (!date || video.paused || !state.firstFrame || state.stalled) return null;
      var s = (Date.now() - date.getTime()) / 1000;
      return s >= 0 && s < 3600 ? Math.round(s * 1000) / 1000 : null;
    }

    function send(viaBeacon) {
      var message = { session_id: sessionId, sent_at: Date.now(), events: queue };
      var live = latency();
      if (live !== null) message.latency_s = live;
      var body = JSON.stringify(message);
      queue = [];
      try {
        if (viaBeacon && root.navigator && root.navigator.sendBeacon) {
          if (root.navigator.sendBeacon(url, body)) return;
        }
        root.fetch(url, { method: "POST", body: body, keepalive: true, mode: "cors",
          headers: { "Content-Type": "text/plain" } }).catch(function () {});
      } catch (e) { /* reporting never breaks playback */ }
    }

    function record(type, fields, now) {
      if (state.ended) return;
      var event = { type: type, at: Date.now() };
      for (var k in fields || {}) event[k] = fields[k];
      queue.push(event);
      if (queue.length >= 32 || now) send(false);
    }

    function onPlaying() {
      if (!state.firstFrame) { state.firstFrame = true; record("first_frame", null, true); }
      else if (state.stalled) { state.stalled = false; record("stall_end", null, true); }
    }
    function onWaiting() {
      if (state.firstFrame && !state.stalled && !video.seeking) {
        state.stalled = true;
        record("stall_start", null, true);
      }
    }
    function onSeeking() {
      // waiting for a seek is the viewer's choice, not a stall
      if (state.stalled) { state.stalled = false; record("stall_end", null, true); }
    }
    function onError(_event, data) {
      if (!data || QUIET_ERRORS[data.details] || state.errors >= MAX_ERRORS) return;
      state.errors += 1;
      record("error", { code: String(data.details || data.type || "unknown"), fatal: !!data.fatal,
        message: String(data.reason || data.type || "").slice(0, 200) }, true);
    }
    function onVideoError() {
      var e = video.error;
      if (!e || state.errors >= MAX_ERRORS) return;
      state.errors += 1;
      record("error", { code: "media_error_" + e.code, fatal: !hls, message: (e.message || "").slice(0, 200) }, true);
    }
    function onLevel(_event, data) {
      var level = hls.levels && hls.levels[data.level];
      if (!level || level === state.level) return;
      state.level = level;
      record("quality", { rendition: level.name || (level.height ? level.height + "p" : "level " + data.level),
        bitrate: Math.round((level.bitrate || 0) / 1000) }, true);
    }
    function onPageHide() { end(); }

    function end() {
      if (state.ended) return;
      if (state.stalled) record("stall_end");
      record("end");
      state.ended = true;
      send(true);
      detach();
    }

    function detach() {
      if (timer) { clearInterval(timer); timer = null; }
      video.removeEventListener("playing", onPlaying);
      video.removeEventListener("waiting", onWaiting);
      video.removeEventListener("seeking", onSeeking);
      video.removeEventListener("error", onVideoError);
      root.removeEventListener("pagehide", onPageHide);
      if (hls && root.Hls) {
        hls.off(root.Hls.Events.ERROR, onError);
        hls.off(root.Hls.Events.LEVEL_SWITCHED, onLevel);
      }
    }

    video.addEventListener("playing", onPlaying);
    video.addEventListener("waiting", onWaiting);
    video.addEventListener("seeking", onSeeking);
    video.addEventListener("error", onVideoError);
    root.addEventListener("pagehide", onPageHide);
    var player = options.player || (hls && root.Hls ? "hls.js" : "html5");
    var version = options.playerVersion || (hls && root.Hls ? root.Hls.version : undefined);
    if (hls && root.Hls) {
      hls.on(root.Hls.Events.ERROR, onError);
      hls.on(root.Hls.Events.LEVEL_SWITCHED, onLevel);
    }
    if (options.resumed) {
      state.firstFrame = true;
      state.stalled = true;
      record("stall_start", null, true);
    } else {
      var start = { player: player };
      if (version) start.player_version = String(version);
      record("start", start, true);
    }
    if (!video.paused && video.readyState >= 3) onPlaying();
    timer = setInterval(function () { send(false); }, HEARTBEAT_MS);

    return { sessionId: sessionId, end: end, detach: detach, flush: function () { send(false); } };
  }

  root.onairMonitor = onairMonitor;
})(window);
