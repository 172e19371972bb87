// stemstream browser mixer: one WebSocket to the server that served this page (bridge/web/server.py).
// Every control carries data-control="<OSC address>" (toggles: aria-pressed), every meter
// data-meter="/meter/<stem>" or "/meter/bus/<bus>" with its peak in data-db.
(function () {
  "use strict";

  // ---------------------------------------------------------------- the fader law (bridge/mix/mixer.py)
  function faderToDb(f) {
    f = Number(f);
    if (Number.isNaN(f)) throw new RangeError("fader is NaN");
    f = Math.min(1, Math.max(0, f));
    if (f >= 0.5) return 40 * f - 30;
    if (f >= 0.25) return 80 * f - 50;
    if (f >= 0.0625) return 160 * f - 70;
    if (f > 0) return 480 * f - 90;
    return -Infinity;
  }
  function dbToFader(db) {
    if (db === null || db === -Infinity || db <= -90) return 0;
    let f;
    if (db >= -10) f = (db + 30) / 40;
    else if (db >= -30) f = (db + 50) / 80;
    else if (db >= -60) f = (db + 70) / 160;
    else f = (db + 90) / 480;
    return Math.min(1, Math.max(0, f));
  }
  function dbText(db) {
    if (db === null || db === undefined || db === -Infinity || db <= -120) return "-\u221e dB";
    const r = Math.round(db * 10) / 10;
    return (r > 0 ? "+" : "") + r.toFixed(1) + " dB";
  }

  // ---------------------------------------------------------------- state
  const token = new URLSearchParams(location.search).get("t") || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const state = {};              // address -> value, as the server said
  const bound = new Map();       // address -> [elements showing it]
  const dragging = new Set();    // fader addresses under a finger: echoes do not move them
  const queued = new Map();      // fader address -> value to send at the next frame
  let layout = "";
  let meterEls = [];
  let selectedBus = null;
  let ws = null;
  let retries = 0;
  let lastMessage = 0;
  let hello = null;
  let retryTimer = null;

  function bind(address, el) {
    if (!bound.has(address)) bound.set(address, []);
    bound.get(address).push(el);
  }

  function send(address, value) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ a: address, v: value }));
  }

  function flushQueued() {
    for (const [a, v] of queued) send(a, v);
    queued.clear();
  }

  // ---------------------------------------------------------------- building the page
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function meter(address, horizontal) {
    const m = el("div", { class: "meter" + (horizontal ? " h" : ""), "data-meter": address, "data-db": "-120.0",
      role: "meter", "aria-label": address.replace("/meter/", "") + " level", "aria-valuemin": "-60",
      "aria-valuemax": "6", "aria-valuenow": "-120" });
    m.appendChild(el("div", { class: "rms" }));
    m.appendChild(el("div", { class: "peak" }));
    return m;
  }

  function fader(address, gainAddress, horizontal, label) {
    const input = el("input", { type: "range", class: horizontal ? "h" : "v", min: "0", max: "1", step: "0.001",
      value: "0.75", "data-control": address, "aria-label": label });
    if (!horizontal) input.setAttribute("orient", "vertical");
    const db = el("div", { class: "db", "data-gain": gainAddress }, "0.0 dB");
    const start = () => dragging.add(address);
    const end = () => { dragging.delete(address); };
    input.addEventListener("pointerdown", start);
    input.addEventListener("pointerup", end);
    input.addEventListener("pointercancel", end);
    input.addEventListener("input", () => {
      const v = Number(input.value);
      db.textContent = dbText(faderToDb(v));
      if (!queued.size) requestAnimationFrame(flushQueued);
      queued.set(address, v);
    });
    input.addEventListener("change", () => {
      queued.delete(address);
      send(address, Number(input.value));
      dragging.delete(address);
    });
    input.addEventListener("dblclick", () => { input.value = "0.75"; send(address, 0.75); });
    bind(address, input);
    bind(gainAddress, db);
    return [input, db];
  }

  function toggle(address, text, cls, label) {
    const b = el("button", { type: "button", class: "toggle " + cls, "data-control": address, "aria-pressed": "false",
      "aria-label": label }, text);
    b.addEventListener("click", () => send(address, b.getAttribute("aria-pressed") !== "true"));
    bind(address, b);
    return b;
  }

  function stemAddress(bus, i, stem, what) {
    return i === 0 ? `/stem/${stem}/${what}` : `/bus/${bus}/stem/${stem}/${what}`;
  }

  function build(h) {
    const key = JSON.stringify([h.stems, h.buses, h.scenes, h.meters]);
    if (key === layout) return;
    layout = key;
    bound.clear();
    bind("/engine/bypass", $("#bypass"));
    const strips = $("#strips"), masters = $("#masters"), tabs = $("#buses"), scenes = $("#scene-buttons");
    strips.textContent = ""; masters.textContent = ""; tabs.textContent = ""; scenes.textContent = "";
    if (!h.buses.includes(selectedBus)) selectedBus = sessionStorage.getItem("stemstream-bus");
    if (!h.buses.includes(selectedBus)) selectedBus = h.buses[0];
    h.buses.forEach((bus) => {
      const t = el("button", { type: "button", role: "tab", "data-bus": bus, "aria-selected": "false" }, bus);
      t.addEventListener("click", () => selectBus(bus));
      tabs.appendChild(t);
    });
    tabs.hidden = h.buses.length < 2;
    for (const stem of h.stems) {
      const strip = el("div", { class: "strip", "data-stem": stem });
      strip.appendChild(el("div", { class: "name" }, stem));
      const well = el("div", { class: "well" });
      well.appendChild(meter(`/meter/${stem}`, false));
      const below = [];
      h.buses.forEach((bus, i) => {
        const [input, db] = fader(stemAddress(bus, i, stem, "fader"), stemAddress(bus, i, stem, "gain"), false,
          `${stem} fader (${bus})`);
        const top = el("div", { class: "ctl", "data-bus": bus });
        top.appendChild(input);
        well.appendChild(top);
        const bottom = el("div", { class: "ctl", "data-bus": bus });
        bottom.appendChild(db);
        const buttons = el("div", { class: "buttons" });
        buttons.appendChild(toggle(stemAddress(bus, i, stem, "mute"), "M", "mute", `mute ${stem} (${bus})`));
        buttons.appendChild(toggle(stemAddress(bus, i, stem, "solo"), "S", "solo", `solo ${stem} (${bus})`));
        bottom.appendChild(buttons);
        below.push(bottom);
      });
      strip.appendChild(well);
      below.forEach((b) => strip.appendChild(b));
      strips.appendChild(strip);
    }
    for (const bus of h.buses) {
      const m = el("div", { class: "master", "data-bus": bus });
      m.appendChild(el("div", { class: "name" }, bus));
      m.appendChild(meter(`/meter/bus/${bus}`, true));
      const [input, db] = fader(`/bus/${bus}/fader`, `/bus/${bus}/gain`, true, `${bus} master`);
      m.appendChild(input);
      m.appendChild(db);
      m.appendChild(toggle(`/bus/${bus}/mute`, "M", "mute", `mute bus ${bus}`));
      masters.appendChild(m);
    }
    for (const name of h.scenes) {
      const address = `/scene/${name}`;
      const b = el("button", { type: "button", class: "scene", "data-control": address }, name);
      b.addEventListener("click", () => {
        const fade = Number($("#fade").value);
        send(address, Number.isFinite(fade) && fade > 0 ? Math.min(fade, 60) : 0);
      });
      scenes.appendChild(b);
    }
    meterEls = h.meters.map((name) => $(`[data-meter="${CSS.escape(name.startsWith("bus:") ? "/meter/bus/" + name.slice(4)
      : "/meter/" + name)}"]`));
    selectBus(selectedBus);
  }

  function selectBus(bus) {
    selectedBus = bus;
    try { sessionStorage.setItem("stemstream-bus", bus); } catch (e) { /* private mode */ }
    document.querySelectorAll("nav [data-bus]").forEach((t) => t.setAttribute("aria-selected", String(t.dataset.bus === bus)));
    document.querySelectorAll(".ctl[data-bus]").forEach((c) => c.classList.toggle("shown", c.dataset.bus === bus));
    document.querySelectorAll(".master[data-bus]").forEach((c) => c.classList.toggle("selected", c.dataset.bus === bus));
  }

  // ---------------------------------------------------------------- applying what the server says
  function apply(changes) {
    for (const address in changes) {
      const v = changes[address];
      state[address] = v;
      for (const e of bound.get(address) || []) {
        if (e.matches("input[type=range]")) {
          if (!dragging.has(address)) e.value = String(v);
        } else if (e.classList.contains("db")) {
          const faderAddress = address.replace(/\/gain$/, "/fader");
          if (!dragging.has(faderAddress)) e.textContent = dbText(v === null ? -Infinity : v);
        } else if (e.hasAttribute("aria-pressed")) {
          e.setAttribute("aria-pressed", String(Boolean(v)));
        }
      }
    }
  }

  function pct(db) { return Math.max(0, Math.min(100, (db + 60) / 66 * 100)); }

  function meters(values) {
    for (let i = 0; i < meterEls.length; i++) {
      const m = meterEls[i];
      if (!m) continue;
      const peak = values[2 * i], rms = values[2 * i + 1];
      m.dataset.db = peak.toFixed(1);
      m.setAttribute("aria-valuenow", peak.toFixed(1));
      const horizontal = m.classList.contains("h");
      const r = m.firstChild.style, p = m.lastChild.style;
      // the lit part shows the gradient of the whole scale; .rms covers the rest from the top (right)
      if (horizontal) { r.width = (100 - pct(rms)) + "%"; p.left = `calc(${pct(peak)}% - 2px)`; }
      else { r.height = (100 - pct(rms)) + "%"; p.bottom = `calc(${pct(peak)}% - 2px)`; }
    }
  }

  function num(v, digits) { return typeof v === "number" ? v.toFixed(digits) : "?"; }

  function status(s) {
    const foot = $("#status");
    foot.textContent = "";
    const parts = [
      ["latency", num(s.latency_ms, 0) + " ms", false],
      ["rtf", s.realtime_factor >= 0 ? num(s.realtime_factor, 2) : "-", s.realtime_factor > 1],
      ["misses", String(s.deadline_misses ?? "?"), s.deadline_misses > 0],
      ["xruns", s.xruns === undefined ? "-" : String(s.xruns), s.xruns > 0],
      ["model", String(s.model ?? "?"), false],
    ];
    parts.forEach(([k, v, bad], i) => {
      if (i) foot.appendChild(document.createTextNode(" \u00b7 "));
      const span = el("span", { "data-status": k, class: bad ? "bad" : "" }, `${k} ${v}`);
      foot.appendChild(span);
    });
  }

  function setConn(text, online) {
    $("#conn").textContent = text;
    document.body.classList.toggle("offline", !online);
  }

  // ---------------------------------------------------------------- the connection
  function connect() {
    clearTimeout(retryTimer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws?t=${encodeURIComponent(token)}`);
    ws = socket;
    socket.onmessage = (ev) => {
      lastMessage = Date.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.m) meters(msg.m);
      else if (msg.state) apply(msg.state);
      else if (msg.hello) {
        hello = msg.hello;
        build(hello);
        apply(hello.state);
        if (hello.status) status(hello.status);
        retries = 0;
        setConn("connected", true);
      } else if (msg.status) status(msg.status);
      else if (msg.error) {
        setConn(`refused: ${msg.error.reason}`, true);
        setTimeout(() => { if (ws === socket && socket.readyState === WebSocket.OPEN) setConn("connected", true); }, 3000);
      }
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      hello = null;
      dragging.clear();
      // a show restarted without --web-token has a new token: after a while, say so
      setConn(retries >= 8 ? "reconnecting\u2026 (a restarted show may need its new QR code)" : "reconnecting\u2026",
        false);
      const wait = Math.min(2000, 250 * 2 ** retries++);
      retryTimer = setTimeout(connect, wait);
    };
    socket.onerror = () => { /* onclose follows */ };
  }

  // a connection that went quiet (a phone that slept, a network that changed) is replaced
  setInterval(() => {
    if (ws && ws.readyState === WebSocket.OPEN && Date.now() - lastMessage > 4000) ws.close();
  }, 1000);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !ws) connect();
  });

  window.stemstream = { faderToDb, dbToFader, dbText, state, get connected() { return !!(ws && hello && ws.readyState === 1); } };
  $("#bypass").addEventListener("click", () => send("/engine/bypass", $("#bypass").getAttribute("aria-pressed") !== "true"));
  if (token) connect();
  else setConn("no access token: scan the QR code", false);
})();
