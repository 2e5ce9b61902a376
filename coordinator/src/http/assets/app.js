// Quarry dashboard: renders the JSON the server inlines (<script id="data">) and live updates.
// Data only ever reaches the page as text nodes (textContent / createTextNode), never as HTML.
(function () {
  'use strict';
  var SVG = 'http://www.w3.org/2000/svg';
  var COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be185d', '#4d7c0f'];

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    (children || []).forEach(function (c) {
      e.appendChild(typeof c === 'object' && c !== null ? c : document.createTextNode(c == null ? '' : String(c)));
    });
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node && node.firstChild) node.removeChild(node.firstChild); }
  function fmt(v) { return v == null || !isFinite(v) ? '–' : Number(v).toPrecision(5); }
  function secs(s) {
    if (s == null) return '–';
    if (s < 90) return s.toFixed(1) + ' s';
    if (s < 5400) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }
  function params(p) {
    if (!p) return '';
    return Object.keys(p).map(function (k) { return k + '=' + p[k]; }).join(' ');
  }
  function jobUrl(id) { return '/jobs/' + encodeURIComponent(id); }
  function apiUrl(id) { return '/api/jobs/' + encodeURIComponent(id); }
  var data = null;
  var node = $('data');
  if (node) { try { data = JSON.parse(node.textContent); } catch (e) { data = null; } }
  var colorOf = {};
  function familyColor(f) {
    if (!(f in colorOf)) colorOf[f] = COLORS[Object.keys(colorOf).length % COLORS.length];
    return colorOf[f];
  }

  // ---- charts (inline SVG) ----
  // series: [{points: [[x, y]], line: bool, color}]; opts: {xlabel, ylabel, xcats}
  function chart(container, series, opts) {
    clear(container);
    var W = 520, H = 240, L = 60, R = 12, T = 12, B = 40;
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (isFinite(p[1])) { xs.push(p[0]); ys.push(p[1]); } }); });
    if (!ys.length) { container.appendChild(el('p', { 'class': 'muted' }, ['No data yet.'])); return; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (opts.xcats) { x0 = -0.5; x1 = opts.xcats.length - 0.5; }
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y1 = y0 + Math.abs(y0 || 1) * 0.01; y0 = y0 - Math.abs(y0 || 1) * 0.01; }
    var sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    var sy = function (y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
    var g = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: '100%', role: 'img' });
    g.appendChild(svg('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, 'class': 'axis' }));
    g.appendChild(svg('line', { x1: L, y1: T, x2: L, y2: H - B, 'class': 'axis' }));
    for (var i = 0; i <= 4; i++) {
      var yv = y0 + (y1 - y0) * i / 4;
      g.appendChild(svg('text', { x: L - 4, y: sy(yv) + 4, 'text-anchor': 'end', 'class': 'tick' }, Number(yv).toPrecision(3)));
    }
    if (opts.xcats) {
      opts.xcats.forEach(function (c, i) {
        g.appendChild(svg('text', { x: sx(i), y: H - B + 14, 'text-anchor': 'middle', 'class': 'tick' }, c));
      });
    } else {
      for (var j = 0; j <= 4; j++) {
        var xv = x0 + (x1 - x0) * j / 4;
        g.appendChild(svg('text', { x: sx(xv), y: H - B + 14, 'text-anchor': 'middle', 'class': 'tick' }, Number(xv).toPrecision(3)));
      }
    }
    g.appendChild(svg('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle', 'class': 'label' }, opts.xlabel || ''));
    g.appendChild(svg('text', { x: 12, y: T + (H - T - B) / 2, 'text-anchor': 'middle', 'class': 'label',
      transform: 'rotate(-90 12 ' + (T + (H - T - B) / 2) + ')' }, opts.ylabel || ''));
    series.forEach(function (s) {
      var pts = s.points.filter(function (p) { return isFinite(p[1]); });
      if (s.line) {
        var d = pts.map(function (p, i) { return (i ? 'L' : 'M') + sx(p[0]).toFixed(1) + ' ' + sy(p[1]).toFixed(1); }).join(' ');
        g.appendChild(svg('path', { d: d, fill: 'none', stroke: s.color, 'stroke-width': 2, 'class': 'series' }));
      } else {
        pts.forEach(function (p) {
          var c = svg('circle', { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: s.r || 3, fill: s.color, 'fill-opacity': s.opacity || 0.7 });
          if (p[2] != null) c.appendChild(svg('title', {}, p[2]));
          g.appendChild(c);
        });
      }
    });
    container.appendChild(g);
  }

  // ---- leaderboard, charts and panels of a job (live page and report.html) ----
  function Board(snapshot) {
    this.entries = {};
    this.finishOrder = [];
    this.order = [];
    this.job = snapshot.job;
    this.apply(snapshot);
  }
  Board.prototype.apply = function (u) {
    var self = this;
    (u.entries || []).forEach(function (e) {
      if (!(e.id in self.entries)) self.finishOrder.push(e.id);
      self.entries[e.id] = e;
    });
    if (u.order) this.order = u.order;
    if (u.job) this.job = u.job;
  };
  Board.prototype.count = function () { return this.finishOrder.length; };
  Board.prototype.better = function (a, b) { return this.job.higher_is_better ? a > b : a < b; };

  function renderJob(board, live) {
    var job = board.job;
    var set = function (id, v) { var n = $(id); if (n) n.textContent = v == null ? '' : String(v); };
    set('state', job.state);
    set('metric', job.metric || '…');
    set('task', job.task);
    set('progress', job.trials_finished + ' trials finished, ' + job.trials_started + ' started · best ' +
      fmt(job.best_score) + (job.best_family ? ' (' + job.best_family + ')' : '') + ' · ' + secs(job.elapsed_seconds));
    set('reason', job.reason || '');
    var st = $('state'); if (st) st.className = 'state ' + job.state;
    var cancel = $('cancel-form');
    if (cancel) cancel.hidden = job.state !== 'queued' && job.state !== 'running';

    var tbody = document.querySelector('#leaderboard tbody');
    if (tbody) {
      var frag = document.createDocumentFragment();
      board.order.forEach(function (id, i) {
        var e = board.entries[id];
        if (!e) return;
        var link = live ? el('a', { href: jobUrl(job.id) + '/trials/' + e.id }, [String(e.id)]) : String(e.id);
        frag.appendChild(el('tr', { id: 'trial-' + e.id, 'class': e.status }, [
          el('td', null, [String(i + 1)]), el('td', null, [link]), el('td', null, [e.family]),
          el('td', { 'class': 'num' }, [fmt(e.score)]),
          el('td', { title: e.failure_reason || '' }, [e.status]),
          el('td', { 'class': 'num' }, [e.fit_seconds == null ? '' : e.fit_seconds.toFixed(2)]),
          el('td', { 'class': 'params' }, [params(e.params)])
        ]));
      });
      clear(tbody);
      tbody.appendChild(frag);
    }

    // Best score over time: seconds since the job started when every time is known, else trial count.
    var finished = board.finishOrder.map(function (id) { return board.entries[id]; });
    var timed = finished.length > 0 && finished.every(function (e) { return e.finished_unix_ms != null; });
    var best = null, line = [], dots = [];
    finished.forEach(function (e, i) {
      var x = timed ? (e.finished_unix_ms - job.created_unix_ms) / 1000 : i + 1;
      if (e.status === 'completed' && e.score != null && isFinite(e.score)) {
        dots.push([x, e.score, 'trial ' + e.id + ' ' + e.family + ' ' + fmt(e.score)]);
        if (best == null || board.better(e.score, best)) best = e.score;
      }
      if (best != null) line.push([x, best]);
    });
    var bc = $('best-chart');
    if (bc) chart(bc, [{ points: dots, color: '#94a3b8', r: 2.5, opacity: 0.6 }, { points: line, line: true, color: '#2563eb' }],
      { xlabel: timed ? 'seconds since the job started' : 'trials finished', ylabel: job.metric || 'score' });

    var fams = [];
    finished.forEach(function (e) { if (fams.indexOf(e.family) < 0) fams.push(e.family); });
    fams.sort();
    var fc = $('family-chart');
    if (fc) {
      chart(fc, fams.map(function (f, i) {
        return {
          color: familyColor(f),
          points: finished.filter(function (e) { return e.family === f && e.status === 'completed'; })
            .map(function (e) { return [i + ((e.id * 0.618) % 1 - 0.5) * 0.5, e.score, 'trial ' + e.id + ' ' + fmt(e.score)]; })
        };
      }), { xcats: fams, ylabel: job.metric || 'score' });
    }
  }

  function renderDownloads(job, live) {
    var ul = $('downloads');
    if (!ul) return;
    clear(ul);
    var add = function (href, text) { ul.appendChild(el('li', null, [el('a', { href: href, download: '' }, [text])])); };
    if (live) {
      add(apiUrl(job.id) + '/leaderboard.csv', 'leaderboard.csv');
      if (job.artifacts && job.artifacts.length) {
        add(apiUrl(job.id) + '/run.tar', 'run folder (.tar)');
        job.artifacts.forEach(function (a) {
          if (a.name === 'model.onnx' || a.name.indexOf('/') < 0) {
            add(apiUrl(job.id) + '/artifacts/' + a.name.split('/').map(encodeURIComponent).join('/'), a.name + ' (' + a.size + ' bytes)');
          }
        });
      } else {
        ul.appendChild(el('li', { 'class': 'muted' }, ['The model and run folder appear when the job completes.']));
      }
    } else {
      ['model.onnx', 'leaderboard.json', 'run.json', 'guardrails.json', 'explanations.json'].forEach(function (n) { add(n, n); });
    }
  }

  function renderImportance(imp) {
    var box = $('importance');
    if (!box) return;
    clear(box);
    var rows = importanceRows(imp);
    if (!rows.length) { box.appendChild(el('p', { 'class': 'muted' }, [imp && imp.error ? 'Not available: ' + imp.error : 'Not available for this job.'])); return; }
    var max = Math.max.apply(null, rows.map(function (r) { return r[1]; })) || 1;
    rows.slice(0, 30).forEach(function (r) {
      var bar = el('div', { 'class': 'bar' });
      bar.style.width = (100 * r[1] / max).toFixed(1) + '%';
      box.appendChild(el('div', { 'class': 'imp-row' }, [el('span', { 'class': 'imp-name' }, [r[0]]),
        el('span', { 'class': 'imp-bar' }, [bar]), el('span', { 'class': 'num' }, [fmt(r[1])])]));
    });
  }
  // explanations.json: {"importance": [{"column", "mean_abs_shap", ...}]} (older shapes tolerated).
  function importanceRows(imp) {
    if (!imp) return [];
    var list = imp.importance || imp.columns || imp.features || [];
    if (!Array.isArray(list)) {
      return Object.keys(list).map(function (k) { return [k, Number(list[k])]; })
        .filter(function (r) { return isFinite(r[1]); }).sort(function (a, b) { return b[1] - a[1]; });
    }
    return list.map(function (r) {
      return [r.column || r.name || r.feature, Number(r.mean_abs_shap != null ? r.mean_abs_shap : (r.importance != null ? r.importance : r.value))];
    }).filter(function (r) { return isFinite(r[1]); }).sort(function (a, b) { return b[1] - a[1]; });
  }

  function renderGuardrails(g, profile) {
    var box = $('guardrails');
    if (!box) return;
    clear(box);
    if (!g && !profile) { box.appendChild(el('p', { 'class': 'muted' }, ['Not available yet (the prepare step writes it).'])); return; }
    if (g) {
      box.appendChild(el('p', null, ['rows: ' + g.n_rows + ' · with a target: ' + g.n_rows_used + ' · duplicate rows: ' +
        g.n_duplicate_rows + (g.minority_share != null ? ' · smallest class share: ' + fmt(g.minority_share) : '')]));
      var t = el('table', { id: 'findings' }, [el('thead', null, [el('tr', null, [el('th', null, ['severity']), el('th', null, ['check']),
        el('th', null, ['column']), el('th', null, ['message'])])])]);
      var tb = el('tbody');
      (g.findings || []).forEach(function (f) {
        tb.appendChild(el('tr', { 'class': String(f.severity) }, [el('td', null, [f.severity]), el('td', null, [f.check]),
          el('td', null, [f.column || '']), el('td', null, [f.message])]));
      });
      t.appendChild(tb);
      box.appendChild(t);
    }
    var schema = profile && (profile.schema || profile.columns);
    if (Array.isArray(schema)) {
      var pt = el('table', { id: 'schema' }, [el('thead', null, [el('tr', null, [el('th', null, ['column']), el('th', null, ['kind']),
        el('th', null, ['missing']), el('th', null, ['distinct'])])])]);
      var pb = el('tbody');
      schema.forEach(function (c) {
        pb.appendChild(el('tr', null, [el('td', null, [c.name]), el('td', null, [typeof c.kind === 'object' ? JSON.stringify(c.kind) : c.kind]),
          el('td', { 'class': 'num' }, [c.n_missing == null ? '' : String(c.n_missing)]),
          el('td', { 'class': 'num' }, [c.n_distinct == null ? '' : String(c.n_distinct)])]));
      });
      pt.appendChild(pb);
      box.appendChild(el('h3', null, ['Inferred schema']));
      box.appendChild(pt);
    }
  }

  function jobPage(live) {
    var board = new Board(data.snapshot);
    renderJob(board, live);
    renderDownloads(board.job, live);
    renderImportance(data.importance);
    renderGuardrails(data.guardrails, data.profile);
    // Milliseconds from navigation start to the first full render (bench/RESULTS.md reads it).
    if (window.performance) document.body.setAttribute('data-rendered-ms', performance.now().toFixed(0));
    if (!live || !window.EventSource) return;
    var final = function (s) { return s === 'completed' || s === 'failed' || s === 'cancelled'; };
    if (final(board.job.state)) return;
    var src = new EventSource(apiUrl(board.job.id) + '/events?from=' + board.count());
    src.addEventListener('update', function (m) {
      var u = JSON.parse(m.data);
      var was = board.job.state;
      board.apply(u);
      renderJob(board, live);
      if (board.job.state !== was) renderDownloads(board.job, live);
      if (!data.guardrails && board.job.phase !== 'prepare') {
        fetch(apiUrl(board.job.id) + '/guardrails').then(function (r) { return r.ok ? r.json() : null; })
          .then(function (g) { if (g) { data.guardrails = g; renderGuardrails(g, data.profile); } });
      }
    });
    src.addEventListener('done', function () {
      src.close();
      ['importance', 'profile'].forEach(function (what) {
        fetch(apiUrl(board.job.id) + '/' + what).then(function (r) { return r.ok ? r.json() : null; }).then(function (v) {
          if (!v) return;
          data[what] = v;
          if (what === 'importance') renderImportance(v); else renderGuardrails(data.guardrails, v);
        });
      });
    });
  }

  function jobsPage() {
    var render = function (jobs) {
      var tbody = document.querySelector('#jobs tbody');
      clear(tbody);
      $('empty').hidden = jobs.length > 0;
      jobs.slice().reverse().forEach(function (j) {
        tbody.appendChild(el('tr', { id: 'job-' + j.id }, [
          el('td', null, [el('a', { href: jobUrl(j.id) }, [j.id])]),
          el('td', null, [el('span', { 'class': 'state ' + j.state }, [j.state])]),
          el('td', null, [j.task]), el('td', null, [j.dataset]), el('td', null, [j.target]), el('td', null, [j.metric || '']),
          el('td', { 'class': 'num' }, [fmt(j.best_score)]), el('td', null, [j.best_family || '']),
          el('td', { 'class': 'num' }, [String(j.trials_finished)]), el('td', { 'class': 'num' }, [secs(j.elapsed_seconds)])
        ]));
      });
    };
    render(data.jobs);
    setInterval(function () {
      fetch('/api/jobs').then(function (r) { return r.ok ? r.json() : null; }).then(function (v) { if (v) render(v.jobs); });
    }, 3000);
  }

  function trialPage() {
    var render = function (t) {
      var meta = $('trial-meta');
      var e = t.entry;
      meta.textContent = (t.in_flight ? 'running' : e.status) + (t.rank ? ' · rank ' + t.rank : '') +
        (e ? ' · score ' + fmt(e.score) + ' · fit ' + (e.fit_seconds || 0).toFixed(2) + ' s' +
          (e.failure_reason ? ' · ' + e.failure_reason : '') : '') + ' · ' + t.curve.length + ' progress reports';
      var tbody = document.querySelector('#params tbody');
      clear(tbody);
      var p = t.params || {};
      Object.keys(p).forEach(function (k) { tbody.appendChild(el('tr', null, [el('th', null, [k]), el('td', null, [String(p[k])])])); });
      var curve = $('curve');
      if (t.curve.length) {
        chart(curve, [{ points: t.curve, line: true, color: '#dc2626' }], { xlabel: 'boosting rounds', ylabel: 'validation loss' });
      } else {
        clear(curve);
        curve.appendChild(el('p', { 'class': 'muted' }, ['No per-round losses were reported for this trial (only boosted trees report them, on this coordinator since it started).']));
      }
      if (t.in_flight) {
        setTimeout(function () {
          fetch(apiUrl(t.job.id) + '/trials/' + t.trial).then(function (r) { return r.ok ? r.json() : null; }).then(function (v) { if (v) render(v); });
        }, 2000);
      }
    };
    render(data);
  }

  var page = document.body.getAttribute('data-page');
  if (!data) return;
  if (page === 'jobs') jobsPage();
  else if (page === 'job') jobPage(true);
  else if (page === 'report') jobPage(false);
  else if (page === 'trial') trialPage();
})();
