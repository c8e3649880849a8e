// The log viewer: the daemon's last log lines, newest at the bottom,
// followed live by polling /api/logs?after=<last line seen>.
"use strict";

const POLL_MS = 1500;

let after = 0;                  // the newest line number already asked about
let keep = 500;                 // lines kept in view (the daemon's buffer size)
let generation = 0;             // bumped when the filters change
let restart = () => {};

function filterQuery() {
  const params = new URLSearchParams();
  const level = document.getElementById("level").value;
  const channel = document.getElementById("channel").value;
  if (level) params.set("level", level);
  if (channel) params.set("channel", channel);
  return params;
}

function lineNode(entry) {
  return el("div", { class: `line lvl-${entry.level}`, "data-seq": entry.seq },
    el("time", { class: "t" }, clock(entry.time)),
    el("span", { class: "lvl" }, entry.level),
    el("span", { class: "ns" }, entry.namespace),
    entry.channel
      ? el("button", { type: "button", class: "ch", title: `Only channel ${entry.channel}`, onclick: () => chooseChannel(entry.channel) }, `ch ${entry.channel}`)
      : null,
    el("span", { class: "text" }, entry.text));
}

function chooseChannel(id) {
  const select = document.getElementById("channel");
  updateChannelChoices([id]);
  select.value = id;
  filtersChanged();
}

function updateChannelChoices(ids) {
  const select = document.getElementById("channel");
  const have = new Set([...select.options].map((o) => o.value));
  for (const id of ids) {
    if (!have.has(id)) select.append(el("option", { value: id }, `channel ${id}`));
  }
}

function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

async function step() {
  const mine = generation;
  const params = filterQuery();
  params.set("after", String(after));
  let answer;
  try {
    answer = await api("GET", `/api/logs?${params}`);
  } catch (e) {
    setConnection(false, `cannot reach the daemon: ${e.message}`);
    return;
  }
  if (mine !== generation) return;          // the filters changed meanwhile
  const box = document.getElementById("log");
  if (answer.last < after) {                // the daemon restarted
    box.replaceChildren();
    after = 0;
    restart();
    return;
  }
  keep = answer.size || keep;
  updateChannelChoices(answer.channels || []);
  const follow = document.getElementById("follow").checked && atBottom(box);
  if (answer.lines.length) {
    box.querySelector(".empty")?.remove();
    box.append(...answer.lines.map(lineNode));
    while (box.children.length > keep) box.firstElementChild.remove();
  }
  after = answer.last;
  if (!box.children.length) box.append(el("p", { class: "muted empty" }, "No log lines match."));
  if (follow) box.scrollTop = box.scrollHeight;
  document.getElementById("log-count").textContent = `${box.querySelectorAll(".line").length} lines (the daemon keeps ${keep})`;
  setConnection(true, `updated ${clock(Date.now() / 1000)}`);
}

function filtersChanged() {
  generation += 1;
  after = 0;
  document.getElementById("log").replaceChildren();
  const params = filterQuery();
  history.replaceState(null, "", params.toString() ? `?${params}` : location.pathname);
  restart();
}

document.addEventListener("DOMContentLoaded", () => {
  const start = new URLSearchParams(location.search);
  if (start.get("channel")) updateChannelChoices([start.get("channel")]);
  for (const name of ["level", "channel"]) {
    const select = document.getElementById(name);
    if (start.get(name)) select.value = start.get(name);
    select.addEventListener("change", filtersChanged);
  }
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("follow").addEventListener("change", (e) => {
    if (e.currentTarget.checked) {
      const box = document.getElementById("log");
      box.scrollTop = box.scrollHeight;
    }
  });
  restart = poll(step, POLL_MS);
});
