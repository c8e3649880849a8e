// Helpers shared by the status and log pages: building elements, calling
// the daemon's API, and formatting times.  No libraries.
"use strict";

// An element with attributes and children (strings become text, never HTML).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Call the API; resolves with the parsed JSON answer, rejects with an
// Error whose message is the daemon's own explanation.
async function api(method, url) {
  const response = await fetch(url, {
    method,
    cache: "no-store",
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const why = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(why);
  }
  return body;
}

// "42 s", "3 min 05 s", "2 h 07 min", "3 d 4 h".
function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

// Local clock time of a Unix time in seconds.
function clock(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// The header's connection indicator.
function setConnection(ok, text) {
  const node = document.getElementById("conn");
  if (!node) return;
  node.textContent = text;
  node.classList.toggle("bad", !ok);
  node.classList.toggle("good", ok);
}

// Run step() now and then every `interval` ms (slower while the tab is
// hidden).  Returns a function that runs it again at once; runs never
// overlap: one asked for during a run follows it.
function poll(step, interval) {
  let timer = null;
  let busy = false;
  let again = false;
  async function run() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    clearTimeout(timer);
    try {
      await step();
    } catch (e) {
      console.error(e);
    } finally {
      busy = false;
      if (again) {
        again = false;
        run();
      } else {
        timer = setTimeout(run, document.hidden ? interval * 5 : interval);
      }
    }
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) run();
  });
  run();
  return run;
}
