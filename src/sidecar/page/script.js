(function () {
  'use strict';
  var KEY = 'egress-sentinel-admin-token';
  function token() { try { return sessionStorage.getItem(KEY) || ''; } catch (e) { return ''; } }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function post(path, body) {
    var headers = { 'Content-Type': 'application/json' };
    var t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    return fetch(path, { method: 'POST', headers: headers, body: JSON.stringify(body || {}),
                         credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.text().then(function (text) {
        return { status: r.status, text: text, result: r.headers.get('X-Verify-Result') }; }); });
  }
  function refresh() {
    if (document.hidden) return Promise.resolve();
    return fetch('/', { cache: 'no-store' }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, 'text/html');
      ['live', 'history', 'incidents', 'fds'].forEach(function (id) {
        var fresh = doc.getElementById(id), old = document.getElementById(id);
        if (fresh && old) old.replaceWith(document.adoptNode(fresh));
      });
      document.getElementById('updated').textContent = 'Refreshed ' + new Date().toLocaleTimeString() + '.';
    }).catch(function () {
      document.getElementById('updated').textContent = 'Refresh failed; retrying.';
    });
  }
  function report(checks, result) {
    var failed = checks.filter(function (c) { return !c.ok; }).length;
    var table = el('table', null, 'report');
    table.id = 'verify-report';
    table.appendChild(el('caption', 'Verify report, ' + new Date().toLocaleTimeString() + ': ' + checks.length +
      ' checks, ' + (checks.length - failed) + ' passed, ' + failed + ' failed (' + (result || '?') + ')'));
    var head = table.createTHead().insertRow();
    ['Target', 'Route', 'Result', 'Reason', 'Detail', 'Total'].forEach(function (h) {
      var th = el('th', h); th.scope = 'col'; head.appendChild(th); });
    var body = table.createTBody();
    checks.forEach(function (c) {
      var row = body.insertRow();
      row.dataset.target = c.target; row.dataset.route = c.route; row.dataset.ok = String(c.ok);
      var detail = c.detail || '';
      [[c.target, 'Target'], [c.route, 'Route'], [c.ok ? 'PASS' : 'FAIL', 'Result'], [c.reason, 'Reason'],
       [detail, 'Detail'], [(c.duration_seconds * 1000).toFixed(1) + ' ms', 'Total']].forEach(function (v, i) {
        var td = el('td', v[0], i === 2 ? (c.ok ? 'pass' : 'fail') : null);
        td.dataset.label = v[1]; row.appendChild(td); });
    });
    return table;
  }
  var button = document.getElementById('verify-now'), out = document.getElementById('verify-out');
  button.addEventListener('click', function () {
    button.disabled = true;
    out.replaceChildren(el('p', 'Running every check now…'));
    post('/verify').then(function (r) {
      if (r.status !== 200) {
        out.replaceChildren(el('p', 'Refused (' + r.status + '): ' + r.text.trim(), 'refused'));
        return;
      }
      out.replaceChildren(report(JSON.parse(r.text), r.result));
    }).catch(function (e) {
      out.replaceChildren(el('p', 'Verify failed: ' + e, 'error'));
    }).then(function () { button.disabled = false; return refresh(); });
  });
  document.querySelectorAll('button[data-override]').forEach(function (b) {
    b.addEventListener('click', function () {
      var target = b.dataset.override;
      var force = document.getElementById(b.dataset.force).value;
      var ttl = document.getElementById(b.dataset.ttl).value.trim();
      var msg = document.getElementById('ov-' + target + '-result');
      b.disabled = true;
      post('/routes/' + encodeURIComponent(target), ttl ? { force: force, ttl: ttl } : { force: force })
        .then(function (r) {
          if (r.status !== 200) { msg.className = 'result refused'; msg.textContent = 'Refused (' + r.status + '): ' + r.text.trim(); return; }
          var d = JSON.parse(r.text);
          msg.className = 'result';
          msg.textContent = 'Now ' + d.force + ', traffic on ' + d.active_route + (d.expires_at ? ', until ' + d.expires_at : '') + '.';
        }).catch(function (e) { msg.className = 'result error'; msg.textContent = 'Failed: ' + e; })
        .then(function () { b.disabled = false; return refresh(); });
    });
  });
  var input = document.getElementById('token-in');
  if (input) {
    var state = document.getElementById('token-state');
    var show = function () { state.textContent = token() ? 'A token is set for this tab.' : 'No token set.'; };
    document.getElementById('token-save').addEventListener('click', function () {
      try { sessionStorage.setItem(KEY, input.value.trim()); } catch (e) {}
      input.value = ''; show();
    });
    document.getElementById('token-clear').addEventListener('click', function () {
      try { sessionStorage.removeItem(KEY); } catch (e) {}
      show();
    });
    show();
  }
  setInterval(refresh, 5000);
})();
