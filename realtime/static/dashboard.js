// onair dashboard: lists live streams with the admin API key the user pastes
// (kept in localStorage), creates streams, copies stream key / RTMP URL, links to watch.
(function () {
  "use strict";
  var KEY = "onair.apiKey";
  var $ = function (id) { return document.getElementById(id); };

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
      if (k === "text") e.textContent = attrs[k]; else if (k === "onclick") e.onclick = attrs[k]; else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function copyButton(label, value) {
    return el("button", { type: "button", text: "Copy " + label, onclick: function (ev) {
      var b = ev.target;
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy " + label; }, 1200); };
      if (navigator.clipboard) navigator.clipboard.writeText(value).then(done, function () { prompt(label, value); });
      else prompt(label, value);
    } });
  }

  function render(streams) {
    var body = $("streams");
    body.textContent = "";
    if (!streams.length) {
      body.appendChild(el("tr", {}, [el("td", { colspan: "4", class: "muted", text: "no live streams yet" })]));
      return;
    }
    streams.forEach(function (s) {
      var rtmp = (s.ingest && s.ingest.rtmp_url) || "";
      var pid = (s.playback_ids && s.playback_ids[0]) || null;
      var ingest = el("td", {}, [
        el("div", {}, [el("code", { text: rtmp })]),
        s.stream_key ? el("div", {}, [el("code", { text: "key: " + s.stream_key.slice(0, 6) + "…" })]) : null,
        el("div", {}, [rtmp ? copyButton("RTMP URL", rtmp) : null, s.stream_key ? copyButton("stream key", s.stream_key) : null]),
      ]);
      var watch = el("td", {}, pid ? [
        el("a", { href: "/watch/" + encodeURIComponent(pid.id), target: "_blank", text: "watch" }),
        el("span", { class: "muted", text: pid.policy === "signed" ? " (signed: needs ?token=)" : "" }),
      ] : [el("span", { class: "muted", text: "no playback id" })]);
      body.appendChild(el("tr", {}, [
        el("td", {}, [el("div", { text: s.name || "(unnamed)" }), el("code", { text: s.id })]),
        el("td", { text: s.status + (s.latency_mode ? " · " + s.latency_mode : "") }),
        ingest, watch,
      ]));
    });
  }

  function refresh() {
    $("keystate").textContent = apiKey() ? "key saved in this browser" : "";
    if (!apiKey()) return;
    api("GET", "/v1/live-streams?limit=100").then(function (j) { $("error").textContent = ""; render(j.data || []); })
      .catch(function (e) { $("error").textContent = "Listing failed: " + e.message; });
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
    api("POST", "/v1/live-streams", body).then(function () { $("name").value = ""; refresh(); })
      .catch(function (e) { $("error").textContent = "Create failed: " + e.message; });
  });
  refresh();
  setInterval(refresh, 5000);
  window.onairDashboard = { ready: true, refresh: refresh };
})();
