// onair room client: camera + mic out on a "publish" RTCPeerConnection, everyone
// else in on a "subscribe" RTCPeerConnection that the server (re)offers.
// Signaling: WebSocket /v1/rooms/{id}/signal?token=… (see realtime/rooms/signaling.py).
// Test hook: window.onairRoom (state, participants, tiles, videoStats()).
(() => {
  "use strict";
  const roomId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  const videoSize = (params.get("video") || "640x480").split("x").map(Number);
  const wantMedia = params.get("media") !== "none";
  const $ = (id) => document.getElementById(id);
  $("room").textContent = roomId;

  const state = {
    status: "connecting", identity: null, canPublish: false, participants: [],
    tracks: {},          // track_id -> {identity, kind, source, muted}
    ownTracks: {},       // kind -> track_id
    mids: {},            // subscribe mid -> {track_id, identity, kind}
    errors: [], log: [], reconnects: 0, left: false, audioMuted: false, videoMuted: false,
  };
  window.onairRoom = state;

  let ws = null, pubPc = null, subPc = null, localStream = null, retry = 0, closedByServer = false;
  // where the signaling socket goes: this page's server, or the one a "moved"
  // message names (the room is hosted elsewhere from now on)
  let signalBase = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
  const tiles = new Map();   // identity -> {el, video, audio, stream}

  function logEvent(m) { state.log.push(m); if (state.log.length > 200) state.log.shift(); }
  function setStatus(s) { state.status = s; $("status").textContent = s; }
  function send(msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }

  function waitGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
  }

  function tileFor(identity, self) {
    let t = tiles.get(identity);
    if (t) return t;
    const el = document.createElement("div");
    el.className = "tile" + (self ? " self" : "");
    el.dataset.identity = identity;
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true; video.muted = true;
    const audio = document.createElement("audio");
    audio.autoplay = true;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = identity + (self ? " (you)" : "");
    el.append(video, audio, name);
    $("tiles").append(el);
    t = { el, video, audio, stream: new MediaStream(), audioStream: new MediaStream(), self };
    video.srcObject = t.stream; audio.srcObject = t.audioStream;
    tiles.set(identity, t);
    return t;
  }

  function removeTile(identity) {
    const t = tiles.get(identity);
    if (!t) return;
    t.el.remove();
    tiles.delete(identity);
  }

  function refreshParticipants() {
    state.participants = [...tiles.keys()].filter((i) => i !== state.identity).sort();
  }

  // Rebuild the remote tiles' streams from the current mid mapping.
  function rebuildRemote() {
    if (!subPc) return;
    const want = new Map();  // identity -> [tracks]
    for (const tr of subPc.getTransceivers()) {
      const m = state.mids[tr.mid];
      if (!m || !tr.receiver.track) continue;
      if (!want.has(m.identity)) want.set(m.identity, []);
      want.get(m.identity).push(tr.receiver.track);
    }
    for (const [identity, list] of want) {
      const t = tileFor(identity, false);
      for (const s of [t.stream, t.audioStream]) {
        for (const old of s.getTracks()) if (!list.includes(old)) s.removeTrack(old);
      }
      for (const track of list) {
        const s = track.kind === "video" ? t.stream : t.audioStream;
        if (!s.getTracks().includes(track)) s.addTrack(track);
      }
      t.video.play().catch(() => {});
      t.audio.play().catch(() => {});
    }
    refreshParticipants();
  }

  async function startPublishing() {
    if (!state.canPublish || !wantMedia) return;
    if (!localStream) {
      localStream = await navigator.mediaDevices.getUserMedia({
        audio: true, video: { width: videoSize[0], height: videoSize[1], frameRate: 30 } });
    }
    const self = tileFor(state.identity, true);
    if (self.stream.getTracks().length === 0) for (const t of localStream.getVideoTracks()) self.stream.addTrack(t);
    pubPc = new RTCPeerConnection({ iceServers: [] });
    pubPc.onconnectionstatechange = () => { state.publishState = pubPc && pubPc.connectionState; };
    const specs = [];
    for (const track of localStream.getTracks()) {
      const tr = pubPc.addTransceiver(track, { direction: "sendonly", streams: [localStream] });
      specs.push({ tr, kind: track.kind, source: track.kind === "video" ? "camera" : "microphone" });
    }
    const offer = await pubPc.createOffer();
    await pubPc.setLocalDescription(offer);
    await waitGathering(pubPc);
    send({ type: "publish", tracks: specs.map((s) => ({ mid: s.tr.mid, kind: s.kind, source: s.source })) });
    send({ type: "offer", pc: "publish", sdp: pubPc.localDescription.sdp });
  }

  async function onSubscribeOffer(msg) {
    if (!subPc) {
      subPc = new RTCPeerConnection({ iceServers: [] });
      subPc.ontrack = () => rebuildRemote();
      subPc.onconnectionstatechange = () => { state.subscribeState = subPc && subPc.connectionState; };
    }
    state.mids = {};
    for (const m of msg.tracks || []) state.mids[m.mid] = m;
    await subPc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    const answer = await subPc.createAnswer();
    await subPc.setLocalDescription(answer);
    await waitGathering(subPc);
    send({ type: "answer", pc: "subscribe", sdp: subPc.localDescription.sdp });
    rebuildRemote();
  }

  async function onMessage(msg) {
    logEvent(msg.type);
    switch (msg.type) {
      case "joined":
        retry = 0;
        state.identity = msg.identity; state.canPublish = msg.can_publish;
        setStatus("joined");
        for (const p of msg.participants) {
          tileFor(p.identity, false);
          for (const t of p.tracks) state.tracks[t.track_id] = { identity: p.identity, ...t };
        }
        refreshParticipants();
        // Not awaited: subscribe offers must not queue behind camera start-up.
        startPublishing().catch((e) => state.errors.push({ code: "publish", message: String(e) }));
        break;
      case "participant_joined":
        tileFor(msg.participant.identity, false); refreshParticipants(); break;
      case "participant_left":
        removeTile(msg.identity); refreshParticipants(); break;
      case "track_published":
        state.tracks[msg.track.track_id] = { identity: msg.identity, ...msg.track };
        if (msg.identity === state.identity) state.ownTracks[msg.track.kind] = msg.track.track_id;
        break;
      case "track_unpublished":
        delete state.tracks[msg.track_id]; break;
      case "muted":
        if (state.tracks[msg.track_id]) state.tracks[msg.track_id].muted = msg.muted; break;
      case "answer":
        if (msg.pc === "publish" && pubPc) await pubPc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        break;
      case "offer":
        if (msg.pc === "subscribe") await onSubscribeOffer(msg);
        break;
      case "moved":
        // the server hands the room on: reconnect at once, through the named one
        signalBase = msg.url.replace(/^http/, "ws").replace(/\/+$/, "");
        state.moves = (state.moves || 0) + 1; retry = 0;
        break;
      case "error":
        state.errors.push(msg);
        if (["removed", "room_closed", "replaced", "room_full", "room_not_found",
             "token_expired", "token_invalid", "token_other_room"].includes(msg.code)) {
          closedByServer = true; setStatus("ended: " + msg.code);
        }
        break;
    }
  }

  function teardownPeers() {
    for (const pc of [pubPc, subPc]) if (pc) pc.close();
    pubPc = subPc = null;
    state.mids = {}; state.ownTracks = {};
    for (const id of [...tiles.keys()]) if (id !== state.identity) removeTile(id);
    refreshParticipants();
  }

  function connect() {
    closedByServer = false;
    ws = new WebSocket(`${signalBase}/v1/rooms/${encodeURIComponent(roomId)}/signal?token=${encodeURIComponent(token)}`);
    let chain = Promise.resolve();
    ws.onopen = () => { setStatus("joining"); send({ type: "join" }); };
    ws.onmessage = (ev) => {
      let msg; try { msg = JSON.parse(ev.data); } catch { return; }
      chain = chain.then(() => onMessage(msg)).catch((e) => state.errors.push({ code: "client", message: String(e) }));
    };
    ws.onclose = () => {
      teardownPeers();
      if (state.left || closedByServer) return;
      // A network blip: try again with backoff; the token is reused.
      state.reconnects += 1; setStatus("reconnecting…");
      const delay = Math.min(8000, 500 * 2 ** retry); retry += 1;
      setTimeout(connect, delay);
    };
  }

  function setMuted(kind, muted) {
    if (localStream) for (const t of localStream.getTracks()) if (t.kind === kind) t.enabled = !muted;
    const id = state.ownTracks[kind];
    if (id) send({ type: "mute", track_id: id, muted });
  }

  $("mute-audio").onclick = () => {
    state.audioMuted = !state.audioMuted; setMuted("audio", state.audioMuted);
    $("mute-audio").classList.toggle("on", state.audioMuted);
    $("mute-audio").textContent = state.audioMuted ? "Unmute mic" : "Mute mic";
  };
  $("mute-video").onclick = () => {
    state.videoMuted = !state.videoMuted; setMuted("video", state.videoMuted);
    $("mute-video").classList.toggle("on", state.videoMuted);
    $("mute-video").textContent = state.videoMuted ? "Start camera" : "Stop camera";
  };
  function leave() {
    state.left = true;
    send({ type: "leave" });
    if (ws) ws.close();
    teardownPeers();
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    setStatus("left");
  }
  $("leave").onclick = leave;
  state.leave = leave;
  state.setMuted = setMuted;
  // Simulate a network blip (tests): drop the socket and the peers, reconnect.
  state.blip = () => { if (ws) ws.close(); };

  const canvas = document.createElement("canvas");
  canvas.width = 32; canvas.height = 24;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  function nonBlack(video) {
    if (!video.videoWidth) return false;
    ctx.drawImage(video, 0, 0, 32, 24);
    const d = ctx.getImageData(0, 0, 32, 24).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    return sum / (d.length / 4) / 3 > 16;
  }
  state.videoStats = () => {
    const out = {};
    for (const [identity, t] of tiles) {
      const v = t.video;
      out[identity] = {
        self: t.self, playing: !v.paused && v.readyState >= 2 && v.videoWidth > 0,
        currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight,
        frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
        nonBlack: nonBlack(v),
      };
    }
    return out;
  };

  connect();
})();
