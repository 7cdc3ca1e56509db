// The console: polls the admin API once a second and redraws its tables. No library and
// no build step; every value from the API goes into the page as text, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "fxprelay-admin-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

/// Calls the API with the bearer token, if one was given; 401 shows the token form.
async function api(method, path, body) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) {
    $("#auth").hidden = false;
    throw new Error("the API needs the admin token (admin.token)");
  }
  if (r.status === 204) return null;
  const json = await r.json();
  if (!r.ok) throw new Error(json.error || r.statusText);
  return json;
}

/// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v;
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function rate(n, seconds) {
  return seconds > 0 ? bytes(n / seconds) + "/s" : "";
}

function replace(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function listenerRows(listeners) {
  const now = Date.now() / 1000;
  return listeners.map((l) => {
    let tls = el("span", { class: "muted" }, "off");
    if (l.tls) {
      const cert = l.tls.certificate;
      const days = cert ? Math.floor((cert.not_after - now) / 86400) : null;
      const expiry = cert
        ? el("span", { class: days < 14 ? "bad" : "" },
            `; ${cert.subject}, expires in ${days} day${days === 1 ? "" : "s"}`)
        : "";
      tls = el("span", {}, `client ${l.tls.client}, server ${l.tls.upstream}`, expiry);
    }
    return el("tr", { "data-listener": l.name },
      el("td", {}, l.name), el("td", {}, l.bind), el("td", {}, l.mode),
      el("td", {}, l.data), el("td", {}, l.upstream), el("td", {}, tls),
      el("td", { class: "num" }, l.sessions));
  });
}

function poolRows(pools) {
  return pools.flatMap((p) => p.backends.map((b) =>
    el("tr", {},
      el("td", {}, p.listener), el("td", {}, p.balance), el("td", {}, b.address),
      el("td", { class: b.state === "up" ? "ok" : "bad" }, b.state),
      el("td", { class: "num" }, b.sessions),
      el("td", { class: "muted" }, b.last_error || (b.last_check_ok ? "check ok" : "")))));
}

function sessionRows(sessions) {
  return sessions.map((s) => {
    const t = s.transfer;
    const transfer = t
      ? `${t.verb} ${t.path}: ${bytes(t.bytes)} ${rate(t.bytes, t.seconds)}`
      : el("span", { class: "muted" }, "idle");
    const end = el("button", {
      "data-end": s.id,
      onclick: () => api("DELETE", `/api/v1/sessions/${s.id}`).then(refresh, report),
    }, "End");
    return el("tr", { "data-session-id": s.id, "data-bytes": t ? t.bytes : "" },
      el("td", { class: "num" }, s.id), el("td", {}, s.listener), el("td", {}, s.client),
      el("td", {}, s.user || ""), el("td", {}, s.upstream || ""),
      el("td", {}, s.tls ? "TLS" : "plain"), el("td", {}, transfer),
      el("td", { class: "num" }, `${bytes(s.download_bytes)} down, ${bytes(s.upload_bytes)} up`),
      el("td", {}, end));
  });
}

function transferRows(transfers) {
  return transfers.map((t) => {
    const live = t.state === "queued" || t.state === "running";
    const bar = t.bytes_total
      ? el("progress", { value: t.bytes_done, max: t.bytes_total })
      : el("progress", {});
    const files = t.files_total > 1 ? ` ${t.files_done}/${t.files_total} files` : "";
    const cancel = live
      ? el("button", {
          "data-cancel": t.id,
          onclick: () => api("DELETE", `/api/v1/transfers/${t.id}`).then(refresh, report),
        }, "Cancel")
      : "";
    return el("tr", { "data-transfer-id": t.id, "data-bytes-done": t.bytes_done },
      el("td", { title: t.id }, t.id.slice(-8)),
      el("td", { class: t.state === "failed" ? "bad" : "" }, t.state),
      el("td", {}, t.source), el("td", {}, t.destination),
      el("td", {}, bar, " ", `${bytes(t.bytes_done)} of ${bytes(t.bytes_total)}`, files,
        t.rate_bytes_per_second ? ` ${bytes(t.rate_bytes_per_second)}/s` : ""),
      el("td", { class: "muted" }, t.error || ""),
      el("td", {}, cancel));
  });
}

function banRows(bans) {
  return bans.map((b) => {
    const events = Object.entries(b.events).map(([k, v]) => `${k} ${v}`).join(", ");
    const lift = el("button", {
      "data-lift": b.address,
      onclick: () => api("DELETE", `/api/v1/bans/${encodeURIComponent(b.address)}`)
        .then(refresh, report),
    }, "Lift");
    return el("tr", { "data-ban": b.address },
      el("td", {}, b.address), el("td", {}, b.source),
      el("td", { class: "num" }, `${Math.ceil(b.seconds_left / 60)} min`),
      el("td", {}, events || ""), el("td", {}, b.listeners.join(", ")), el("td", {}, lift));
  });
}

function report(e) {
  $("#status").textContent = e.message;
}

async function refresh() {
  try {
    const [listeners, pools, sessions, transfers, bans] = await Promise.all([
      api("GET", "/api/v1/listeners"),
      api("GET", "/api/v1/upstreams"),
      api("GET", "/api/v1/sessions"),
      api("GET", "/api/v1/transfers?limit=50"),
      api("GET", "/api/v1/bans"),
    ]);
    replace($("#listeners tbody"), listenerRows(listeners.listeners));
    replace($("#pools tbody"), poolRows(pools.pools));
    $("#pools").hidden = pools.pools.length === 0;
    replace($("#sessions tbody"), sessionRows(sessions.sessions));
    replace($("#transfers tbody"), transferRows(transfers.transfers.slice().reverse()));
    replace($("#bans tbody"), banRows(bans.bans));
    $("#serving").textContent = listeners.draining ? "draining (shutting down)" : "serving";
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    report(e);
  }
}

$("#auth form").onsubmit = (ev) => {
  ev.preventDefault();
  token = $("#token").value;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#auth").hidden = true;
  refresh();
};

$("#order").onsubmit = (ev) => {
  ev.preventDefault();
  const body = {
    source: $("#source").value,
    destination: $("#destination").value,
    options: { recursive: $("#recursive").checked },
  };
  api("POST", "/api/v1/transfers", body).then(() => {
    $("#order-result").textContent = "ordered";
    refresh();
  }, (e) => { $("#order-result").textContent = e.message; });
};

refresh();
setInterval(refresh, 1000);
