// The status page: running channels, source slots, Channels DVR, and the
// channel list, kept up to date by polling /api/status every two seconds.
"use strict";

const POLL_MS = 2000;
const CHANNEL_LIST_MS = 20000;      // the list's health and states change slowly
const BIG_LIST = 3000;              // larger lists reload only when asked
const SHOWN_CHANNELS = 150;         // rows rendered at once; the filter narrows

const STATE_TEXT = {
  starting: "starting",
  live: "live",
  switching: "switching",
  retrying: "retrying",
  buffering: "buffering",
  failed: "failed",
  stopped: "stopped",
};

const cards = new Map();            // channel id -> running channel card
let channelList = [];               // from /api/channels, with a search text each
let channelListAt = 0;
let runningIds = new Set();
let playingRows = new Map();        // channel id -> row id of the stream playing
let previewing = null;
let noticeTimer = null;
let refreshNow = () => {};

// --- Notices and actions -------------------------------------------------

function notice(ok, text) {
  const node = document.getElementById("notice");
  node.textContent = text;
  node.className = "notice " + (ok ? "ok" : "error");
  node.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { node.hidden = true; }, ok ? 8000 : 15000);
}

async function action(button, method, url, describe) {
  button.disabled = true;
  try {
    notice(true, describe(await api(method, url)));
    return true;
  } catch (e) {
    notice(false, e.message);
    return false;
  } finally {
    button.disabled = false;
    refreshNow();
  }
}

function forceSwitch(button, id) {
  return action(button, "POST", `/force_switch/${id}`, (a) =>
    a.switched_from
      ? `Channel ${a.channel_id}: switching away from ${a.switched_from}.`
      : `Channel ${a.channel_id}: nothing was playing to switch from.`);
}

function stopChannel(button, id) {
  return action(button, "POST", `/stop/${id}`, (a) => `Channel ${a.channel_id} stopped; its slot is free.`);
}

async function refreshDatabase(button) {
  const ok = await action(button, "POST", "/refresh_db_cache", (a) =>
    `Database reloaded: ${a.channels} channels, ${a.streams} streams` +
    (a.skipped_rows ? `, ${a.skipped_rows} rows skipped (see the log)` : "") + ".");
  if (ok) loadChannels(true);
}

async function refreshProviders(button) {
  const ok = await action(button, "POST", "/refresh_providers", (a) =>
    (a.providers || []).map((p) => {
      const last = p.last_sync || {};
      return `${p.name}: ${last.result || "not synced"}` +
        (last.result === "error" ? "" : ` (+${last.added || 0} ~${last.updated || 0} -${last.removed || 0})`);
    }).join("; ") || "No providers configured.");
  if (ok) loadChannels(true);
}

// --- Preview ---------------------------------------------------------------

function preview(id, name) {
  const section = document.getElementById("preview");
  const video = document.getElementById("player");
  const note = document.getElementById("preview-note");
  const url = `/channel/${id}/stream.m3u8`;
  const absolute = `${location.origin}${url}`;
  previewing = id;
  section.hidden = false;
  document.getElementById("preview-title").textContent = `${id} ${name || ""}`;
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.hidden = false;
    video.src = url;
    video.play().catch(() => {});
    note.textContent = `Playing ${absolute} (muted; the preview counts as a viewer while open).`;
  } else {
    video.hidden = true;
    video.removeAttribute("src");
    note.textContent = `This browser cannot play HLS by itself. Open ${absolute} in VLC, Safari or Channels.`;
  }
  section.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function closePreview() {
  const video = document.getElementById("player");
  video.pause();
  video.removeAttribute("src");
  video.load();
  document.getElementById("preview").hidden = true;
  previewing = null;
}

// --- Summary cards ---------------------------------------------------------

function initials(name) {
  const words = String(name || "").replace(/[^\p{L}\p{N} ]/gu, " ").split(/\s+/).filter(Boolean);
  return words.slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "TV";
}

function logo(url, name) {
  if (url) return el("img", { class: "logo", src: url, alt: "", loading: "lazy", referrerpolicy: "no-referrer" });
  return el("span", { class: "logo none", "aria-hidden": "true" }, initials(name));
}

function renderDvr(dvr, now) {
  const box = document.getElementById("dvr");
  box.className = "";
  if (!dvr || !dvr.configured) {
    box.replaceChildren(el("p", {},
      el("span", { class: "badge state-off" }, "not configured")),
      el("p", { class: "muted small" }, "Set channels_dvr_url in config.yaml so streams watched or recorded in Channels DVR are never stopped."));
    return;
  }
  const state = String(dvr.state || "unknown");
  const rows = [
    el("p", {}, el("span", { class: `badge dvr-${state.replace(/[^a-z]/g, "")}` }, state),
      dvr.url ? el("span", { class: "url small" }, " ", dvr.url) : null),
  ];
  const facts = [];
  if (typeof dvr.last_success === "number") facts.push(`last answer ${duration(now - dvr.last_success)} ago`);
  if (dvr.event_stream) facts.push(`event stream ${dvr.event_stream}`);
  if (facts.length) rows.push(el("p", { class: "small muted" }, facts.join(" · ")));
  if (dvr.last_error && state !== "ok") rows.push(el("p", { class: "small error-text" }, dvr.last_error));
  const activities = Array.isArray(dvr.activities) ? dvr.activities : [];
  rows.push(activities.length
    ? el("ul", { class: "activities small" }, activities.map((a) =>
        el("li", {}, a.sentence || `${a.kind || "activity"}${a.channel_id ? " channel " + a.channel_id : ""}${a.client ? " on " + a.client : ""}`)))
    : el("p", { class: "small muted" }, "Nothing watched or recorded right now."));
  box.replaceChildren(...rows);
}

function renderSources(sources) {
  const box = document.getElementById("sources");
  box.className = "";
  const names = Object.keys(sources || {}).sort();
  if (!names.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No sources in the database."));
    return;
  }
  box.replaceChildren(...names.map((name) => {
    const { in_use: used, limit } = sources[name];
    const fill = el("div", { class: "fill" });
    const limited = limit !== null && limit !== undefined;
    const share = limited ? (limit > 0 ? Math.min(1, used / limit) : 1) : 0;
    fill.style.width = `${Math.round(share * 100)}%`;
    const full = limited && used >= limit;
    return el("div", { class: "source" + (full ? " full" : ""), "data-source": name },
      el("div", { class: "source-head" },
        el("span", { class: "source-name" }, name),
        el("span", { class: "source-count" }, limited ? `${used} / ${limit}` : `${used} · no limit`)),
      el("div", { class: "bar" + (limited ? "" : " unlimited"), role: "img", "aria-label": `${name}: ${used} of ${limited ? limit : "unlimited"} slots used` }, fill));
  }));
}

function renderDatabase(db, waiting) {
  const box = document.getElementById("database");
  box.className = "";
  const parts = [el("p", {}, `${db.channels} channels · ${db.streams} streams`)];
  if (db.skipped_rows) parts.push(el("p", { class: "small muted" }, `${db.skipped_rows} rows skipped (no URL or bad Channel-id)`));
  if (waiting) parts.push(el("p", { class: "small error-text" }, `${waiting} tune(s) waiting for a free slot`));
  box.replaceChildren(...parts);
}

function limitText(used, limit) {
  return limit === null || limit === undefined ? `${used} · no limit` : `${used} / ${limit}`;
}

function syncText(last, now) {
  if (!last) return "not synced yet";
  const when = `${duration(now - last.at)} ago`;
  if (last.result === "error") return `sync failed ${when}`;
  return `synced ${when}: ${last.added} added, ${last.updated} updated, ${last.removed} removed` +
    (last.result === "partial" ? " (some accounts failed)" : "");
}

function renderProviders(answer) {
  const box = document.getElementById("providers");
  const button = document.getElementById("refresh-providers");
  const providers = (answer && answer.providers) || [];
  box.className = "";
  button.hidden = !providers.length;
  if (!providers.length) {
    box.replaceChildren(el("p", { class: "muted small" }, "No providers configured (providers: in config.yaml)."));
    return;
  }
  const now = answer.now;
  box.replaceChildren(...providers.map((p) => {
    const last = p.last_sync;
    const result = p.syncing ? "syncing" : (last ? last.result : "pending");
    const parts = [
      el("div", { class: "provider-head" },
        el("span", { class: "provider-name" }, p.name, " ",
          el("span", { class: `badge result-${result}` }, result)),
        el("span", { class: "source-count" }, limitText(p.in_use, p.limit))),
      el("p", { class: "small muted" }, syncText(last, now) +
        (p.next_sync ? ` · next in ${duration(p.next_sync - now)}` : "")),
    ];
    for (const a of p.accounts || []) {
      const facts = [`${a.kind}`, `${a.rows} rows`, `connections ${limitText(a.in_use, a.limit)}`];
      const refused = Object.values((a.skipped && a.skipped.scheme_not_allowed) || {}).reduce((x, y) => x + y, 0);
      if (refused) facts.push(`${refused} streams left out (URL scheme not in allowed_url_schemes)`);
      if (a.xtream) {
        facts.push(`account ${a.xtream.status}`);
        facts.push(a.xtream.expires ? `expires ${new Date(a.xtream.expires * 1000).toLocaleDateString()}` : "no expiry");
      }
      parts.push(el("div", { class: "account", "data-account": a.account },
        el("span", {}, a.account, " "), el("span", { class: "muted" }, facts.join(" · ")),
        a.error ? el("p", { class: "small error-text" },
          `${a.error}${a.last_attempt ? ` (${clock(a.last_attempt)})` : ""}`) : null));
    }
    return el("div", { class: "provider", "data-provider": p.name }, ...parts);
  }));
}

// --- Running channels ----------------------------------------------------

function makeCard(entry) {
  const id = entry.channel_id;
  const fields = {};
  const field = (name, label) => {
    const dd = el("dd", { "data-f": name });
    fields[name] = dd;
    return [el("dt", {}, label), dd];
  };
  const badge = el("span", { class: "badge", "data-f": "state" });
  fields.state = badge;
  const head = el("div", { class: "card-head" },
    el("span", { class: "logo-slot" }),
    el("div", { class: "title" }, el("span", { class: "num" }, id), " ", el("span", { class: "name", "data-f": "name" })),
    badge);
  fields.name = head.querySelector(".name");
  const root = el("article", { class: "card chan-card", "data-channel": id },
    head,
    el("dl", { class: "facts" },
      field("stream", "Stream"), field("url", "URL"), field("live", "Live for"),
      field("viewers", "Viewers"), field("ffmpeg", "ffmpeg"), field("buffering", "Buffering"),
      field("content", "Picture, sound"),
      field("failovers", "Failovers"), field("tried", "Tried")),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "preview-btn", onclick: () => preview(id, fields.name.textContent) }, "Preview"),
      el("button", { type: "button", class: "switch-btn", onclick: (e) => forceSwitch(e.currentTarget, id) }, "Force switch"),
      el("button", { type: "button", class: "stop-btn danger", onclick: (e) => stopChannel(e.currentTarget, id) }, "Stop")));
  return { root, fields, logo: null };
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function updateCard(card, entry, now) {
  const f = card.fields;
  const current = entry.current;
  const state = entry.display_state || entry.state;
  setText(f.name, entry.name || "");
  setText(f.state, STATE_TEXT[state] || state);
  f.state.className = `badge state-${state}`;
  card.root.dataset.state = state;
  if (card.logo !== (entry.logo || "")) {
    card.logo = entry.logo || "";
    card.root.querySelector(".logo-slot").replaceChildren(logo(card.logo, entry.name));
  }
  if (current) {
    setText(f.stream, [current.source || "unnamed source", `quality ${current.quality || "?"}`, current.encoding, current.video]
      .filter(Boolean).join(" · "));
    setText(f.url, current.url || "");
    setText(f.live, current.live_for === null || current.live_for === undefined ? "not yet" : duration(current.live_for));
    const speed = typeof current.speed === "number" ? `speed ${current.speed.toFixed(2)}×` : "speed –";
    const kbps = current.bitrate_kbps || entry.measured_kbps;
    setText(f.ffmpeg, `${speed} · ${kbps ? Math.round(kbps) + " kbit/s" : "bitrate –"}`);
    setText(f.buffering, `${current.buffer_events} event${current.buffer_events === 1 ? "" : "s"} in the last minute`);
  } else if (entry.slate_for !== null && entry.slate_for !== undefined) {
    setText(f.stream, `showing the slate (temporarily unavailable) for ${duration(entry.slate_for)} while every candidate is retried`);
  } else {
    setText(f.stream, entry.state === "switching" ? "starting the next candidate…" : "no stream yet");
    setText(f.url, "");
    setText(f.live, "–");
    setText(f.ffmpeg, "–");
    setText(f.buffering, "–");
  }
  const watchers = (entry.dvr_activity || []).map((a) => a.sentence || `${a.kind || "active"}${a.client ? " on " + a.client : ""}`);
  const requests = `${entry.requests} request${entry.requests === 1 ? "" : "s"}`;
  const viewers = entry.viewers || { ts: [], hls: [] };
  const who = [...(viewers.ts || []), ...(viewers.hls || [])]
    .map((v) => `${v.format.toUpperCase()} ${v.address} for ${duration(v.connected_for)}`);
  const counts = `${(viewers.ts || []).length} TS, ${(viewers.hls || []).length} HLS`;
  const dropped = entry.slow_viewers_dropped ? `${entry.slow_viewers_dropped} dropped as too slow` : null;
  setText(f.viewers, [counts, ...who, dropped, `last request ${duration(entry.last_request_ago)} ago`, requests, ...watchers]
    .filter(Boolean).join(" · "));
  const last = entry.last_failover;
  setText(f.failovers, last
    ? `${entry.failovers} · last ${duration(now - last.at)} ago from ${last.from}: ${last.reason}`
    : "none");
  setText(f.content, contentText(entry));
  f.content.classList.toggle("error-text", !!(current && current.content && Object.keys(current.content).length));
  const tried = entry.tried || [];
  setText(f.tried, tried.length ? tried.map((t) => `${t.candidate}: ${t.reason}`).join("\n") : "none");
  f.tried.classList.toggle("error-text", tried.some((t) => t.reason !== "switched by request"));
}

const FAULT_WORDS = { black: "black picture", frozen: "frozen picture", silent: "no sound" };

function contentText(entry) {
  const current = entry.current;
  const parts = [];
  if (current) {
    const checks = current.checks || [];
    parts.push(checks.length ? `checked: ${checks.map((k) => FAULT_WORDS[k] || k).join(", ")}` : "not checked");
    for (const [kind, seconds] of Object.entries(current.content || {})) {
      parts.push(`${FAULT_WORDS[kind] || kind} for ${duration(seconds)}`);
    }
    if (current.size) parts.push(current.size);
  }
  for (const kind of entry.content_tolerated || []) {
    parts.push(`${FAULT_WORDS[kind] || kind} taken as the channel's content`);
  }
  return parts.join(" · ") || "–";
}

function renderChecks(content, idle, now) {
  const box = document.getElementById("checks");
  box.className = "";
  if (!content) {
    box.replaceChildren(el("p", { class: "muted small" }, "–"));
    return;
  }
  const limit = (s) => (s ? `${s} s` : "off");
  const rows = [
    el("p", { class: "small" }, `black ${limit(content.black_seconds)} · frozen ${limit(content.freeze_seconds)} · ` +
      `silent ${limit(content.silence_seconds)} · slate ${content.slate}`),
  ];
  if ((content.skip_channels || []).length) {
    rows.push(el("p", { class: "small muted" }, `not checked: channel ${content.skip_channels.join(", ")}`));
  }
  const tolerated = content.tolerated || [];
  if (tolerated.length) {
    rows.push(el("ul", { class: "small" }, tolerated.map((t) =>
      el("li", {}, `channel ${t.channel_id}: ${FAULT_WORDS[t.kind] || t.kind} taken as its content for ${duration(t.until - now)}`))));
  }
  if (!idle || !idle.enabled) {
    rows.push(el("p", { class: "small muted" }, "Idle checks off (idle_check_hours)."));
  } else {
    rows.push(el("p", { class: "small" }, `Idle checks every ${idle.hours} h · ${idle.checked} done since the start`));
    if (idle.checking) {
      rows.push(el("p", { class: "small muted" }, `checking ${idle.checking.candidate} (channel ${idle.checking.channel_id}, ${idle.checking.phase})`));
    }
    const recent = idle.recent || [];
    if (recent.length) {
      rows.push(el("ul", { class: "small" }, recent.slice(0, 5).map((r) =>
        el("li", { class: r.status === "online" || r.status === "stopped" ? "" : "error-text" },
          `${r.candidate}: ${r.status}${r.reason ? " (" + r.reason + ")" : ""}${r.measured ? " · " + r.measured : ""}`))));
    }
  }
  box.replaceChildren(...rows);
}

function renderRunning(channels, now) {
  const box = document.getElementById("running");
  document.getElementById("running-count").textContent = channels.length ? `(${channels.length})` : "";
  const seen = new Set();
  for (const entry of channels) {
    seen.add(entry.channel_id);
    let card = cards.get(entry.channel_id);
    if (!card) {
      card = makeCard(entry);
      cards.set(entry.channel_id, card);
    }
    updateCard(card, entry, now);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  const wanted = channels.map((e) => cards.get(e.channel_id).root);
  if (!wanted.length) {
    box.replaceChildren(el("p", { class: "muted empty" }, "No channel is running. Tune one in Channels DVR, or use Preview in the list below."));
  } else if (wanted.some((node, i) => box.children[i] !== node) || box.children.length !== wanted.length) {
    box.replaceChildren(...wanted);
  }
  runningIds = new Set(channels.map((e) => e.channel_id));
  playingRows = new Map(channels.filter((e) => e.current).map((e) => [e.channel_id, String(e.current.rowid)]));
  if (previewing && !runningIds.has(previewing) && !document.getElementById("player").hidden) {
    document.getElementById("preview-note").textContent = `Channel ${previewing} is not running (any more).`;
  }
}

function renderEnded(ended) {
  const section = document.getElementById("ended-section");
  const items = (ended || []).slice(-6).reverse();
  section.hidden = !items.length;
  document.getElementById("ended").replaceChildren(...items.map((e) =>
    el("li", {}, el("span", { class: "num" }, e.channel_id), ` ${e.name || ""} — ${e.state}: ${e.reason || ""}`)));
}

async function step() {
  try {
    const status = await api("GET", "/api/status");
    renderRunning(status.channels || [], status.now);
    renderSources(status.sources);
    renderDvr(status.dvr, status.now);
    renderDatabase(status.database || {}, status.waiting_for_slot);
    renderChecks(status.content_checks, status.idle_checks, status.now);
    renderEnded(status.recently_ended);
    renderProviders(await api("GET", "/api/providers"));
    setConnection(true, `updated ${clock(Date.now() / 1000)}`);
    markRunningInList();
  } catch (e) {
    setConnection(false, `cannot reach the daemon: ${e.message}`);
  }
  if (Date.now() - channelListAt > CHANNEL_LIST_MS && channelList.length < BIG_LIST) loadChannels(false);
}

// --- Channel list ------------------------------------------------------------

function checkedText(value) {
  if (!value) return "never checked";
  const when = new Date(value);
  return isNaN(when) ? `checked ${value}` : `checked ${when.toLocaleString()}`;
}

function upText(c) {
  const seen = (c.uptime || 0) + (c.downtime || 0);
  if (!seen) return null;
  return `up ${duration(c.uptime)} · down ${duration(c.downtime)} (${Math.round((100 * c.uptime) / seen)} % up)`;
}

function renderChannel(ch) {
  return el("div", { class: "chan", "data-channel": ch.channel_id },
    el("div", { class: "chan-head" },
      logo(ch.logo, ch.name),
      el("span", { class: "num" }, ch.channel_id),
      el("span", { class: "name" }, ch.name),
      ch.group ? el("span", { class: "group small muted" }, ch.group) : null,
      el("span", { class: "badge run-state", hidden: true }),
      el("button", { type: "button", class: "small-btn", onclick: () => preview(ch.channel_id, ch.name) }, "Preview")),
    el("ol", { class: "cands" }, ch.candidates.map((c) =>
      el("li", { class: "cand" + (c.failed_recently !== null ? " failed" : ""), "data-rowid": c.rowid },
        el("span", { class: "rank" }, `#${c.rank}`),
        el("span", { class: "src" }, c.source || "unnamed source"),
        el("span", { class: "q" }, `quality ${c.quality || "?"}`),
        c.provider ? el("span", { class: "small muted" }, `${c.provider.account} · matched by ${c.provider.matched}`) : null,
        el("span", { class: `badge health-${c.seen || c.status || "unknown"}` }, c.seen || c.status || "unchecked"),
        el("span", { class: "small muted" }, checkedText(c.last_checked)),
        c.measured ? el("span", { class: "small muted" }, measuredText(c.measured)) : null,
        upText(c) ? el("span", { class: "small muted" }, upText(c)) : null,
        el("span", { class: "badge state-live playing-tag", hidden: true }, "playing"),
        c.failed_recently !== null ? el("span", { class: "small error-text" }, `failed recently: ${c.failed_recently}`) : null,
        el("span", { class: "url small" }, c.url)))));
}

function measuredText(m) {
  const parts = [];
  if (m.width && m.height) parts.push(`${m.width}×${m.height}`);
  if (m.fps) parts.push(`${Math.round(m.fps * 100) / 100} fps`);
  if (m.kbps) parts.push(`${m.kbps} kbit/s`);
  return parts.join(" · ");
}

function markRunningInList() {
  for (const node of document.querySelectorAll("#channels .chan")) {
    const tag = node.querySelector(".run-state");
    const running = runningIds.has(node.dataset.channel);
    const playing = playingRows.get(node.dataset.channel);
    for (const item of node.querySelectorAll(".cand")) {
      const on = item.dataset.rowid === playing;
      item.classList.toggle("playing", on);
      item.querySelector(".playing-tag").hidden = !on;
    }
    tag.hidden = !running;
    if (running) {
      const card = cards.get(node.dataset.channel);
      const state = card ? card.root.dataset.state : "live";
      tag.textContent = STATE_TEXT[state] || state;
      tag.className = `badge run-state state-${state}`;
    }
  }
}

function renderChannels() {
  const words = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const matches = channelList.filter((ch) => words.every((w) => ch.search.includes(w)));
  const shown = matches.slice(0, SHOWN_CHANNELS);
  const box = document.getElementById("channels");
  box.replaceChildren(...(shown.length ? shown.map(renderChannel)
    : [el("p", { class: "muted" }, channelList.length ? "No channel matches the filter." : "The database has no channels yet: import a playlist, then refresh the database cache.")]));
  document.getElementById("channel-count").textContent = words.length
    ? `(${matches.length} of ${channelList.length})` : `(${channelList.length})`;
  document.getElementById("channels-more").textContent = matches.length > shown.length
    ? `Showing the first ${shown.length} of ${matches.length}; type more to narrow the list.` : "";
  markRunningInList();
}

async function loadChannels(announce) {
  channelListAt = Date.now();
  try {
    const answer = await api("GET", "/api/channels");
    channelList = answer.channels.map((ch) => ({
      ...ch,
      search: [ch.channel_id, ch.name, ch.group, ...(ch.playlists || []),
        ...ch.candidates.flatMap((c) => [c.source, c.name, `q${c.quality}`, c.status, c.seen])].join(" ").toLowerCase(),
    }));
    for (const ch of channelList) {
      const playing = ch.candidates.find((c) => c.playing);
      if (playing && !playingRows.has(ch.channel_id)) playingRows.set(ch.channel_id, String(playing.rowid));
    }
    renderChannels();
  } catch (e) {
    if (announce) notice(false, `Could not load the channel list: ${e.message}`);
    document.getElementById("channels").replaceChildren(el("p", { class: "error-text" }, `Could not load the channel list: ${e.message}`));
  }
}

// --- Start ---------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("refresh-db").addEventListener("click", (e) => refreshDatabase(e.currentTarget));
  document.getElementById("refresh-providers").addEventListener("click", (e) => refreshProviders(e.currentTarget));
  document.getElementById("preview-close").addEventListener("click", closePreview);
  let typing = null;
  document.getElementById("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(renderChannels, 120);
  });
  loadChannels(false);
  refreshNow = poll(step, POLL_MS);
});
