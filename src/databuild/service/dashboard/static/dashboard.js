// The dashboard's only script (the Content-Security-Policy allows no inline script).
// - follows /api/v1/events/stream (SSE) and asks htmx to refresh the page's live parts;
//   a lost connection is shown, and resumes where it stopped (Last-Event-ID / after=);
// - shows times in local time (UTC on hover);
// - writes (create, cancel) through /api/v1 with the bearer token kept in sessionStorage;
// - tails a job run's log.
// Everything from the server is put in the page with textContent: never parsed as HTML.
(function () {
  "use strict";
  var TOKEN_KEY = "databuild-token";

  function localTimes(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]");
    nodes.forEach(function (node) {
      var when = new Date(node.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        node.textContent = when.toLocaleString();
      }
    });
  }

  // --- live updates -------------------------------------------------------------------
  var lastId = document.body.getAttribute("data-after") || "0";
  var source = null;
  var pending = null;
  var everOpen = false;
  var live = document.getElementById("live");

  function setLive(state, text) {
    live.setAttribute("data-state", state);
    live.setAttribute("data-last-event-id", lastId);
    live.textContent = text;
  }

  function refresh() {
    if (pending !== null) return;
    pending = setTimeout(function () {
      pending = null;
      if (window.htmx) window.htmx.trigger(document.body, "db:changed");
    }, 250);
  }

  function onEvent(event) {
    if (event.lastEventId) lastId = event.lastEventId;
    live.setAttribute("data-last-event-id", lastId);
    refresh();
  }

  function connect() {
    var url = document.body.getAttribute("data-stream") + "?after=" + encodeURIComponent(lastId);
    source = new EventSource(url);
    var types = (document.body.getAttribute("data-event-types") || "").split(",");
    types.forEach(function (type) {
      if (type) source.addEventListener(type, onEvent);
    });
    source.onopen = function () {
      if (everOpen) refresh(); // back after a loss: what changed meanwhile is resent
      everOpen = true;
      setLive("live", "Live");
    };
    source.onerror = function () {
      setLive("lost", "Live updates lost: reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(connect, 2000); // resume after the last event seen
      }
    };
  }

  // --- writes -------------------------------------------------------------------------
  function call(method, url, body, retried) {
    var headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    return fetch(url, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
    }).then(function (response) {
      if (response.status === 401 && !retried) {
        var given = window.prompt("This service needs its token to make changes (kept for this tab only):");
        if (given) {
          sessionStorage.setItem(TOKEN_KEY, given.trim());
          return call(method, url, body, true);
        }
      }
      return response.text().then(function (text) {
        var data = null;
        try { data = JSON.parse(text); } catch (e) { data = { error: text }; }
        if (!response.ok) {
          if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
          throw new Error((data && data.error) || ("HTTP " + response.status));
        }
        return data;
      });
    });
  }

  function say(node, text, bad) {
    node.textContent = text;
    node.classList.toggle("bad", !!bad);
  }

  function seconds(text, name) {
    text = (text || "").trim();
    if (!text || text === "none") return 0;
    var match = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
    if (!match || match[0] === "") throw new Error(name + " " + JSON.stringify(text) + " is not a duration like 30m, 2h or 1d6h");
    return (+(match[1] || 0)) * 86400 + (+(match[2] || 0)) * 3600 + (+(match[3] || 0)) * 60 + (+(match[4] || 0));
  }

  function setUpCreate() {
    var form = document.getElementById("new-want");
    if (!form) return;
    var result = document.getElementById("new-want-result");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body;
      try {
        var refs = form.elements.refs.value.split("\n").map(function (s) { return s.trim(); }).filter(Boolean);
        if (!refs.length) throw new Error("give at least one partition ref");
        body = {
          partition_refs: refs,
          sla_seconds: seconds(form.elements.sla.value, "SLA"),
          ttl_seconds: seconds(form.elements.ttl.value, "TTL"),
          source: "dashboard",
        };
        var date = form.elements.data_date.value.trim();
        if (date) body.data_date = date;
      } catch (e) {
        say(result, e.message, true);
        return;
      }
      say(result, "Creating…");
      call("POST", form.getAttribute("data-api"), body).then(function (data) {
        result.textContent = "";
        result.classList.remove("bad");
        var list = document.createElement("ul");
        list.id = "created";
        (data.wants || []).forEach(function (want) {
          var item = document.createElement("li");
          var link = document.createElement("a");
          link.href = "/wants/" + encodeURIComponent(want.want_id);
          link.textContent = want.partition_ref;
          item.appendChild(document.createTextNode("Want "));
          item.appendChild(link);
          item.appendChild(document.createTextNode(": " + want.status));
          list.appendChild(item);
        });
        (data.notices || []).forEach(function (notice) {
          var item = document.createElement("li");
          item.textContent = notice.message;
          list.appendChild(item);
        });
        result.appendChild(list);
      }).catch(function (e) { say(result, "Not created: " + e.message, true); });
    });
  }

  function setUpCancel() {
    document.body.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-cancel]");
      if (!button) return;
      var result = button.parentNode.querySelector(".result");
      button.disabled = true;
      call("DELETE", "/api/v1/wants/" + encodeURIComponent(button.getAttribute("data-cancel")))
        .then(function (want) { say(result, "Canceled: " + want.status); refresh(); })
        .catch(function (e) { button.disabled = false; say(result, "Not canceled: " + e.message, true); });
    });
  }

  // --- the log ------------------------------------------------------------------------
  function setUpLog() {
    var pre = document.getElementById("log");
    if (!pre) return;
    var state = document.getElementById("log-state");
    var url = pre.getAttribute("data-log-url");
    var offset = 0;
    function running() {
      var node = document.querySelector("[data-run-status]");
      var status = node ? node.getAttribute("data-run-status") : "";
      return status === "queued" || status === "running";
    }
    function next() {
      fetch(url + "?offset=" + offset + "&limit=262144", { credentials: "omit" }).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        var more = response.headers.get("X-Log-More") === "true";
        offset = parseInt(response.headers.get("X-Log-Next-Offset") || "0", 10);
        return response.text().then(function (text) {
          if (text) {
            var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.appendChild(document.createTextNode(text));
            if (atEnd) pre.scrollTop = pre.scrollHeight;
          }
          if (more) return next();
          if (running()) {
            state.textContent = "(following the running run)";
            setTimeout(next, 1000);
          } else {
            state.textContent = offset ? "(complete)" : "(empty)";
          }
        });
      }).catch(function (e) { state.textContent = "(log unavailable: " + e.message + ")"; });
    }
    next();
  }

  document.body.addEventListener("htmx:afterSettle", function (event) { localTimes(event.target); });
  localTimes(document);
  setUpCreate();
  setUpCancel();
  setUpLog();
  connect();
})();
