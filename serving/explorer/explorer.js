// The tailtower explorer: plain fetch calls to the service's JSON API (serving/service_api.py), no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const datasetHistories = new Map(); // user id -> [{item_id, title}] from the run's eval split
let latest = 0; // the newest recommendation call: older answers that arrive late are dropped
let answers = 0; // answered calls, and whether one is due or in flight: body data-answers / data-busy
let knobTimer = null;
let knobDue = false;

function setBusy(busy) {
  document.body.dataset.busy = String(busy);
}

// GET or POST JSON; throws an Error with the service's own message on a non-2xx answer.
async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const doc = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${response.status}: ${doc.error || response.statusText}`);
  }
  return doc;
}

function showError(error) {
  $("error").textContent = error ? `The service answered an error — ${error.message || error}` : "";
  $("error").hidden = !error;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function percent(value) {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)}%`;
}

async function loadStatus() {
  try {
    const ready = await api("readyz");
    $("status").textContent = `Model ${ready.model}, version ${ready.version}: ${ready.status}`;
  } catch (error) {
    $("status").textContent = `Not ready (${error.message})`;
  }
}

async function loadUsers() {
  try {
    const doc = await api("v1/users?limit=50");
    for (const user of doc.users) {
      datasetHistories.set(user.user_id, user.history);
      $("user-pick").append(new Option(user.user_id, user.user_id));
    }
    $("users-source").textContent = doc.source
      ? `${doc.users.length} users from the run's eval split (${doc.source}).`
      : "No dataset users found in the run folder (make demo writes them): type a user id.";
  } catch (error) {
    $("users-source").textContent = "Could not list the dataset's users.";
    showError(error);
  }
}

function renderHistory(items, source) {
  $("history-source").textContent = source;
  $("history").replaceChildren(...items.map((item) => element("li", `${item.title || item.item_id} (${item.item_id})`)));
}

// The history the model will see: the service's store first; else the dataset's, sent with the request.
async function historyFor(userId) {
  const stored = await api(`v1/history?user_id=${encodeURIComponent(userId)}`);
  if (stored.items.length) {
    renderHistory(stored.items, "The service's history store: the user's last clicks, add-to-carts and purchases.");
    return [];
  }
  const dataset = datasetHistories.get(userId) || [];
  if (dataset.length) {
    renderHistory(dataset, "From the run's eval split, sent with the request (the service has none stored).");
  } else {
    renderHistory([], "No history: the model ranks without one.");
  }
  return dataset.map((item) => item.item_id);
}

function renderItem(item) {
  const li = element("li");
  li.dataset.itemId = item.item_id;
  const head = element("div", undefined, "item-head");
  head.append(element("span", item.title || item.item_id, "title"), element("span", item.item_id, "id"));
  const score = item.score === null ? "placed by a rule" : `score ${item.score.toFixed(3)}`;
  head.append(element("span", score, "score"));
  const badges = element("div", undefined, "badges");
  badges.append(element("span", item.is_tail ? "tail" : "head", `badge ${item.is_tail ? "tail" : "head"}`));
  if (item.is_new) badges.append(element("span", "new", "badge new"));
  if (item.sponsored) badges.append(element("span", "sponsored", "badge sponsored"));
  li.append(head, badges);
  if (item.reason) li.append(element("p", item.reason.message, `reason ${item.reason.code}`));
  return li;
}

async function recommend() {
  const userId = $("user-id").value.trim();
  if (!userId) {
    showError("pick or type a user id first");
    return;
  }
  const call = ++latest;
  setBusy(true);
  try {
    const history = await historyFor(userId);
    const answer = await api("v1/recommendations", {
      user_id: userId,
      k: Number($("k").value) || 10,
      history,
      knobs: { mmr_lambda: Number($("mmr_lambda").value), xquad_lambda: Number($("xquad_lambda").value) },
      rules: $("rules").checked,
    });
    if (call !== latest) return;
    showError(null);
    $("recommendations").replaceChildren(...answer.items.map(renderItem));
    const tail = answer.items.filter((item) => item.is_tail).length;
    const share = answer.items.length ? tail / answer.items.length : null;
    $("list-summary").textContent = `Tail share of this list: ${percent(share)} (${tail} of ${answer.items.length}),`
      + ` model version ${answer.model_version}.`
      + (answer.rules_fired && answer.rules_fired.length ? ` Rules that changed it: ${answer.rules_fired.join(", ")}.` : "");
  } catch (error) {
    if (call !== latest) return;
    $("recommendations").replaceChildren();
    $("list-summary").textContent = "";
    showError(error);
  }
  document.body.dataset.answers = String(++answers);
  setBusy(knobDue);
  loadExposure();
}

async function loadExposure() {
  try {
    const doc = await api("v1/exposure");
    const shown = doc.shown === "served" ? "every served slot" : "impression events";
    const rows = [
      ["Served lists", doc.requests],
      ["Tail share of served lists (APLT)", percent(doc.aplt)],
      ["Catalog coverage", percent(doc.coverage)],
      ["Tail coverage", percent(doc.tail_coverage)],
      ["CTR head", percent(doc.ctr_head)],
      ["CTR tail", percent(doc.ctr_tail)],
      ["CTR counts as shown", shown],
      ["Window", `${doc.window_s} s`],
    ];
    $("exposure").replaceChildren(...rows.flatMap(([name, value]) => [element("dt", name), element("dd", String(value))]));
  } catch (error) {
    $("exposure").replaceChildren(element("dt", "Unavailable"), element("dd", error.message));
  }
}

function onKnob(event) {
  $(`${event.target.id}-value`).textContent = event.target.value;
  clearTimeout(knobTimer);
  knobDue = true;
  setBusy(true);
  knobTimer = setTimeout(() => {
    knobDue = false;
    if ($("user-id").value.trim()) recommend();
    else setBusy(false);
  }, 150);
}

$("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  recommend();
});
$("user-pick").addEventListener("change", (event) => {
  if (!event.target.value) return;
  $("user-id").value = event.target.value;
  recommend();
});
for (const knob of document.querySelectorAll(".knob")) knob.addEventListener("input", onKnob);
$("rules").addEventListener("change", () => $("user-id").value.trim() && recommend());
$("exposure-refresh").addEventListener("click", loadExposure);
document.body.dataset.ready = "true"; // the script ran: tests wait for this
loadStatus();
loadUsers();
loadExposure();
