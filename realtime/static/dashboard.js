// onair dashboard: the operator's page, on the API with the admin key the user
// pastes (kept in localStorage). Pages (hash routes): #/streams (status, live
// thumbnail, ingest health, viewers, warnings; create, copy RTMP URL and key),
// #/streams/{id} (the player, the timeline's series as uPlot charts with its
// events as markers, the events with the API key that caused them), #/assets,
// #/rooms, #/webhooks (endpoints, their delivery log, retry), #/keys.
// Live: the API's Server-Sent Events (read with fetch: EventSource sends no
// Authorization header) refresh the page on view; a poll every 10 s covers the rest.
// Tests read window.onairDashboard = {ready, route, charts, timeline, refresh}.
(function () {
  "use strict";
  var KEY = "onair.apiKey";
  var $ = function (id) { return document.getElementById(id); };
  var state = window.onairDashboard = { ready: false, route: "", charts: {}, timeline: null, refresh: refresh };
  var player = null;
  var timer = null;

  function apiKey() { return localStorage.getItem(KEY) || ""; }

  function api(method, path, body) {
    var headers = { "Authorization": "Bearer " + apiKey() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) throw new Error((j.error && j.error.message) || ("HTTP " + r.status));
          return j;
        });
      });
  }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "onclick") e.onclick = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }

  function fill(body, rows, cols, empty) {
    body.textContent = "";
    if (!rows.length) body.appendChild(el("tr", {}, [el("td", { colspan: String(cols), class: "muted", text: empty })]));
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
  function fail(what) { return function (e) { $("error").textContent = what + " failed: " + e.message; }; }

  function copyButton(label, value) {
    return el("button", { type: "button", text: "Copy " + label, onclick: function (ev) {
      var b = ev.target;
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy " + label; }, 1200); };
      if (navigator.clipboard) navigator.clipboard.writeText(value).then(done, function () { prompt(label, value); });
      else prompt(label, value);
    } });
  }

  function pill(status) { return el("span", { class: "pill " + (status === "active" ? "live" : status), text: status }); }

  // ------------------------------------------------------------------ streams
  var health = {};

  function healthText(h) {
    if (!h || !h.ingest) return "";
    var i = h.ingest, parts = [];
    if (i.bitrate_kbps != null) parts.push(Math.round(i.bitrate_kbps) + " kbit/s");
    if (i.frame_rate != null) parts.push(i.frame_rate + " fps");
    if (i.keyframe_interval_s != null) parts.push("keyframe every " + i.keyframe_interval_s + " s");
    if (i.video_codec) parts.push(i.video_codec + (i.audio_codec ? "+" + i.audio_codec : ""));
    return parts.join(" · ");
  }

  function renderStreams(streams) {
    fill($("streams"), streams.map(function (s) {
      var rtmp = (s.ingest && s.ingest.rtmp_url) || "";
      var pid = (s.playback_ids && s.playback_ids[0]) || null;
      var h = health[s.id];
      var thumb = pid && pid.policy !== "signed" && s.status === "active"
        ? el("img", { class: "thumb", alt: "", src: "/thumb/" + encodeURIComponent(pid.id) + ".jpg?t=" + Math.floor(Date.now() / 10000) })
        : null;
      var warnings = (s.warnings || []).map(function (w) { return el("div", { class: "warning", text: "⚠ " + w.message }); });
      return el("tr", {}, [
        el("td", {}, [thumb, el("div", { text: s.name || "(unnamed)" }), el("code", { text: s.id })]),
        el("td", {}, [pill(s.status), el("div", { class: "muted", text: s.latency_mode || "" }),
          h && s.status === "active" ? el("div", { text: h.viewers + " watching" }) : null]),
        el("td", {}, [
          el("div", {}, [el("code", { text: rtmp })]),
          el("div", {}, [rtmp ? copyButton("RTMP URL", rtmp) : null, s.stream_key ? copyButton("stream key", s.stream_key) : null]),
          el("div", { class: "muted", text: healthText(h) }),
        ].concat(warnings)),
        el("td", {}, [
          pid ? el("a", { href: "/watch/" + encodeURIComponent(pid.id), target: "_blank", text: "watch" }) : el("span", { class: "muted", text: "no playback id" }),
          pid && pid.policy === "signed" ? el("span", { class: "muted", text: " (signed: needs ?token=)" }) : null,
          el("div", {}, [el("a", { href: "#/streams/" + encodeURIComponent(s.id), class: "details", text: "timeline" })]),
        ]),
      ]);
    }), 4, "no live streams yet");
  }

  function loadStreams() {
    return api("GET", "/v1/live-streams?limit=100").then(function (j) {
      var streams = j.data || [];
      renderStreams(streams);
      return Promise.all(streams.filter(function (s) { return s.status === "active"; }).map(function (s) {
        return api("GET", "/v1/live-streams/" + encodeURIComponent(s.id) + "/health")
          .then(function (h) { health[s.id] = h; }, function () {});
      })).then(function () { renderStreams(streams); });
    });
  }

  // ------------------------------------------------------------------ one stream
  var CHARTS = [
    { name: "viewers", label: "Viewers", color: "#4fc3f7" },
    { name: "ingest_bitrate", label: "Ingest kbit/s", color: "#81c784" },
    { name: "startup_time", label: "Startup ms (median)", color: "#ffb74d" },
    { name: "rebuffer_percentage", label: "Rebuffering %", color: "#e57373" },
  ];
  var MARK = { "live_stream.connected": "#81c784", "live_stream.active": "#81c784",
    "live_stream.disconnected": "#e57373", "live_stream.idle": "#999", "live_stream.warning": "#ffb74d",
    "view.rebuffer": "#e57373" };

  function markers(u) {
    var line = state.timeline;
    if (!line) return;
    var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
    ctx.save();
    ctx.lineWidth = Math.max(1, devicePixelRatio);
    line.events.forEach(function (e) {
      var x = u.valToPos(Date.parse(e.at) / 1000, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
      ctx.strokeStyle = e.actor ? "#ba68c8" : (MARK[e.type] || "#777");
      ctx.setLineDash(e.type === "view.rebuffer" ? [2, 3] : []);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
    });
    ctx.restore();
  }

  function chartData(points) {
    return [points.map(function (p) { return Date.parse(p.t) / 1000; }),
      points.map(function (p) { return p.value; })];
  }

  function drawCharts(line) {
    var box = $("charts");
    var width = Math.max(260, box.clientWidth - 8);
    CHARTS.forEach(function (c) {
      var data = chartData(line.series[c.name] || []);
      var chart = state.charts[c.name];
      if (chart && Math.abs(chart.width - width) < 2) { chart.setData(data); return; }
      if (chart) chart.destroy();
      var holder = $("chart-" + c.name);
      if (!holder) { holder = el("div", { id: "chart-" + c.name, class: "chart" }); box.appendChild(holder); }
      state.charts[c.name] = new uPlot({
        width: width, height: 150, title: c.label,
        scales: { x: { time: true } },
        series: [{}, { label: c.label, stroke: c.color, width: 2, fill: c.color + "22", spanGaps: false, points: { show: true, size: 5 } }],
        axes: [{ stroke: "#aaa", grid: { stroke: "#2a2a2a" } }, { stroke: "#aaa", grid: { stroke: "#2a2a2a" }, size: 50 }],
        legend: { show: false },
        hooks: { draw: [markers] },
      }, data, holder);
    });
  }

  function renderEvents(line) {
    var rows = line.events.slice().reverse().map(function (e) {
      var details = e.type === "view.rebuffer" ? e.data.duration_ms + " ms"
        : (e.data.warnings || []).map(function (w) { return w.type; }).join(", ");
      return el("tr", {}, [el("td", { text: when(e.at) }), el("td", { text: e.type }),
        el("td", { text: e.actor ? (e.actor.name || e.actor.api_key_id) : "" }), el("td", { class: "muted", text: details })]);
    });
    fill($("stream-events"), rows, 4, "nothing in the last hour");
  }

  function play(pid) {
    var video = $("stream-video");
    if (!pid || pid.policy === "signed") { video.hidden = true; return; }
    video.hidden = false;
    var src = "/play/" + encodeURIComponent(pid.id) + ".m3u8";
    if (player && player.url && player.url.indexOf(src) >= 0) return;
    if (player) { player.destroy(); player = null; }
    if (window.Hls && Hls.isSupported()) {
      player = new Hls({ lowLatencyMode: true, liveDurationInfinity: true });
      player.loadSource(src);
      player.attachMedia(video);
    } else { video.src = src; }
    video.play().catch(function () {});
  }

  function loadStream(id) {
    var path = "/v1/live-streams/" + encodeURIComponent(id);
    return Promise.all([api("GET", path), api("GET", path + "/timeline"), api("GET", path + "/health").catch(function () { return null; })])
      .then(function (got) {
        var s = got[0], line = got[1], h = got[2];
        $("stream-title").textContent = (s.name || s.id) + " — " + s.status;
        $("stream-health").textContent = [healthText(h), h ? h.viewers + " watching" : ""].filter(Boolean).join(" · ");
        state.timeline = line;
        drawCharts(line);
        renderEvents(line);
        if (s.status === "active") play((s.playback_ids || [])[0]);
      });
  }

  // ------------------------------------------------------------------ the rest
  function loadAssets() {
    return api("GET", "/v1/assets?limit=100").then(function (j) {
      fill($("assets"), (j.data || []).map(function (a) {
        var pid = (a.playback_ids || [])[0];
        return el("tr", {}, [
          el("td", {}, [el("code", { text: a.id }), a.live_stream_id ? el("div", { class: "muted", text: "from " + a.live_stream_id }) : null]),
          el("td", {}, [pill(a.status)]),
          el("td", { text: a.duration_s != null ? Math.round(a.duration_s) + " s" : "–" }),
          el("td", { text: a.source || "" }),
          el("td", {}, [pid && a.status === "ready" ? el("a", { href: "/watch/" + encodeURIComponent(pid.id), target: "_blank", text: "play" }) : null]),
        ]);
      }), 5, "no assets yet");
    });
  }

  function loadRooms() {
    return api("GET", "/v1/rooms?limit=100").then(function (j) {
      var rooms = j.data || [];
      return Promise.all(rooms.map(function (r) {
        return api("GET", "/v1/rooms/" + encodeURIComponent(r.id) + "/participants")
          .then(function (p) { return p.data || []; }, function () { return []; });
      })).then(function (people) {
        fill($("rooms"), rooms.map(function (r, i) {
          return el("tr", {}, [
            el("td", {}, [el("div", { text: r.name || "(unnamed)" }), el("code", { text: r.id })]),
            el("td", {}, [pill(r.status || "")]),
            el("td", { text: people[i].length ? people[i].map(function (p) { return p.identity; }).join(", ") : "nobody" }),
          ]);
        }), 3, "no rooms yet");
      });
    });
  }

  function retry(id) {
    return api("POST", "/v1/webhook-deliveries/" + encodeURIComponent(id) + "/retry").then(refresh, fail("Retry"));
  }

  function loadWebhooks() {
    return api("GET", "/v1/webhook-endpoints?limit=100").then(function (j) {
      var endpoints = j.data || [];
      return Promise.all(endpoints.map(function (e) {
        return api("GET", "/v1/webhook-endpoints/" + encodeURIComponent(e.id) + "/deliveries?limit=25")
          .then(function (d) { return d.data || []; }, function () { return []; });
      })).then(function (logs) {
        var box = $("webhooks");
        box.textContent = "";
        if (!endpoints.length) box.appendChild(el("p", { class: "muted", text: "no webhook endpoints yet" }));
        endpoints.forEach(function (e, i) {
          var rows = logs[i].map(function (d) {
            return el("tr", { "data-delivery": d.id }, [
              el("td", { text: d.event_type || "" }),
              el("td", {}, [pill(d.status)]),
              el("td", { text: String(d.attempt_count) + (d.last_status_code ? " (HTTP " + d.last_status_code + ")" : d.last_error ? " (" + d.last_error + ")" : "") }),
              el("td", { text: d.next_attempt_at ? when(d.next_attempt_at) : "–" }),
              el("td", {}, [d.status === "succeeded" ? null : el("button", { type: "button", class: "retry", text: "Retry now", onclick: function () { retry(d.id); } })]),
            ]);
          });
          var body = el("tbody");
          fill(body, rows, 5, "no deliveries yet");
          box.appendChild(el("div", { class: "endpoint" }, [
            el("h3", {}, [el("code", { text: e.url })]),
            el("div", { class: "muted", text: (e.events && e.events.length ? e.events.join(", ") : "all events") + " · " + e.id }),
            el("div", { class: "scroll" }, [el("table", {}, [
              el("thead", {}, [el("tr", {}, ["Event", "Status", "Attempts", "Next attempt", ""].map(function (t) { return el("th", { text: t }); }))]),
              body,
            ])]),
          ]));
        });
      });
    });
  }

  function loadKeys() {
    return api("GET", "/v1/api-keys?limit=100").then(function (j) {
      fill($("keys"), (j.data || []).map(function (k) {
        return el("tr", {}, [el("td", {}, [el("code", { text: k.id })]), el("td", { text: k.name || "" }),
          el("td", { text: k.scope }), el("td", { text: when(k.created_at) })]);
      }), 4, "no API keys");
    });
  }

  // ------------------------------------------------------------------ routing
  var PAGES = { streams: loadStreams, assets: loadAssets, rooms: loadRooms, webhooks: loadWebhooks, keys: loadKeys };

  function route() {
    var parts = (location.hash || "#/streams").slice(2).split("/");
    return { page: parts[0] || "streams", id: parts[1] ? decodeURIComponent(parts[1]) : null };
  }

  function show() {
    var r = route();
    var page = r.page === "streams" && r.id ? "stream" : (PAGES[r.page] ? r.page : "streams");
    Array.prototype.forEach.call(document.querySelectorAll(".page"), function (p) { p.hidden = p.id !== "page-" + page; });
    Array.prototype.forEach.call(document.querySelectorAll("#nav a"), function (a) {
      a.className = a.getAttribute("href") === "#/" + r.page ? "current" : "";
    });
    if (page !== "stream" && player) { player.destroy(); player = null; }
    state.route = page;
    refresh();
  }

  var pending = null;
  function refresh() {
    $("keystate").textContent = apiKey() ? "key saved in this browser" : "";
    if (!apiKey()) return Promise.resolve();
    var r = route();
    var load = r.page === "streams" && r.id ? function () { return loadStream(r.id); } : (PAGES[r.page] || loadStreams);
    pending = load().then(function () { $("error").textContent = ""; }, fail("Loading"));
    return pending;
  }

  var soon = null;
  function refreshSoon() {
    if (soon) return;
    soon = setTimeout(function () { soon = null; refresh(); }, 300);
  }

  // Server-Sent Events over fetch (for the Authorization header); reconnects.
  function listen() {
    if (!apiKey()) { setTimeout(listen, 2000); return; }
    var live = $("live");
    fetch("/v1/events/stream", { headers: { "Authorization": "Bearer " + apiKey(), "Accept": "text/event-stream" } })
      .then(function (r) {
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        live.textContent = "live"; live.className = "pill live";
        var reader = r.body.getReader(), decoder = new TextDecoder(), buf = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) throw new Error("closed");
            buf += decoder.decode(chunk.value, { stream: true });
            var at;
            while ((at = buf.indexOf("\n\n")) >= 0) {
              var block = buf.slice(0, at); buf = buf.slice(at + 2);
              if (/^data:/m.test(block)) refreshSoon();
            }
            return pump();
          });
        }
        return pump();
      })
      .catch(function () {
        live.textContent = "offline"; live.className = "pill";
        setTimeout(listen, 3000);
      });
  }

  $("keyform").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = $("apikey").value.trim();
    if (v) localStorage.setItem(KEY, v);
    $("apikey").value = "";
    refresh();
  });
  $("forget").addEventListener("click", function () { localStorage.removeItem(KEY); location.reload(); });
  $("create").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = { latency_mode: $("latency").value, playback_policy: $("policy").value };
    if ($("name").value.trim()) body.name = $("name").value.trim();
    api("POST", "/v1/live-streams", body).then(function () { $("name").value = ""; refresh(); }, fail("Create"));
  });
  window.addEventListener("hashchange", show);
  window.addEventListener("resize", function () { if (state.timeline && state.route === "stream") drawCharts(state.timeline); });
  show();
  listen();
  timer = setInterval(refresh, 10000);
  state.ready = true;
})();
