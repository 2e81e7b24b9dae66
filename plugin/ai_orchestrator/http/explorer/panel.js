/*
 * Orthanc AI Orchestrator: the AI panel of Orthanc Explorer (/app/explorer.html, jQuery 1.7 + jQuery Mobile 1.1).
 * Registered by ai_orchestrator.entry through orthanc.ExtendOrthancExplorer; Orthanc serves it in
 * /plugins/explorer.js, loaded after Explorer's own scripts.
 *
 * Study page: the study's AI workitems (model and version, state, progress, the reason of a cancel, links to the
 * result series), refreshed every 2 s while work is scheduled or running; "Run AI model" lists the models that
 * apply to the study and starts one; "Cancel" requests the cancellation of a scheduled or running workitem.
 * Series page: the model and workitem that produced a result series, or the workitems that read an input series.
 *
 * Every request is relative to the Explorer (../ai-orchestrator, ../series): same origin, so the browser sends the
 * credentials it already uses for Orthanc (HTTP basic auth, or a reverse proxy's cookies).
 */
(function ($) {
  'use strict';

  var API = '../ai-orchestrator';
  var REFRESH_MS = 2000;
  var STATES = {
    'SCHEDULED': 'scheduled',
    'IN PROGRESS': 'running',
    'COMPLETED': 'completed',
    'CANCELED': 'canceled'
  };
  var shown = { study: null, series: null };  // the Orthanc ID each panel shows now
  var seen = null;  // workitem UID -> whether it was scheduled or running when this page last saw it
  var generation = 0;  // bumped on every study refresh: a stale answer or timer does nothing
  var timer = null;

  var CSS = [
    '#ai-panel { margin-bottom: 1em; }',
    '#ai-panel .ai-toolbar { display: flex; align-items: center; gap: .6em; flex-wrap: wrap; }',
    '#ai-panel .ai-toolbar h3 { margin: 0 auto 0 0; font-size: 1.1em; }',
    '#ai-panel .ai-note { font-size: .8em; color: #666; }',
    '#ai-panel .ai-error { color: #a00; font-weight: bold; white-space: pre-wrap; }',
    '#ai-panel .ai-models { margin: .5em 0; }',
    '#ai-panel .ai-item-head { display: flex; align-items: center; gap: .6em; flex-wrap: wrap; }',
    '#ai-panel .ai-item-head h3 { margin: 0; }',
    '#ai-panel .ai-item p { white-space: normal; margin: .3em 0 0 0; }',
    '.ai-state { display: inline-block; padding: .1em .6em; border-radius: 1em; font-size: .8em;',
    '  font-weight: bold; color: #fff; background: #777; text-shadow: none; }',
    '.ai-state-scheduled { background: #4a6fa5; }',
    '.ai-state-running { background: #d98200; }',
    '.ai-state-completed { background: #2e8b3a; }',
    '.ai-state-canceled { background: #b03030; }',
    '#ai-panel .ai-progress { display: inline-block; width: 10em; height: .7em; background: #ddd;',
    '  border-radius: .35em; overflow: hidden; vertical-align: middle; margin-right: .4em; }',
    '#ai-panel .ai-progress > div { height: 100%; background: #d98200; }',
    '#ai-panel .ai-state-completed ~ .ai-progress > div { background: #2e8b3a; }',
    '#ai-panel .ai-reason { color: #a00; }',
    '.ai-button { display: inline-block; padding: .35em .9em; border: 1px solid #888; border-radius: .5em;',
    '  background: linear-gradient(#fdfdfd, #e4e4e4); color: #222; font: inherit; font-size: .85em;',
    '  font-weight: bold; cursor: pointer; text-shadow: 0 1px 0 #fff; }',
    '.ai-button:hover { background: linear-gradient(#fff, #eee); }',
    '.ai-button[disabled] { opacity: .5; cursor: default; }',
    '.ai-button-primary { background: linear-gradient(#5f9cc5, #396b9e); color: #fff; border-color: #145072;',
    '  text-shadow: 0 1px 0 #145072; }',
    '.ai-button-danger { background: linear-gradient(#e0766b, #b33a2e); color: #fff; border-color: #8a1f16;',
    '  text-shadow: 0 1px 0 #8a1f16; }',
    '#ai-series-panel .ai-mono, #ai-panel .ai-mono { font-family: monospace; font-size: .85em; }'
  ].join('\n');

  function call(method, path, body, contentType) {
    var options = { url: API + path, type: method, dataType: 'json', cache: false, timeout: 30000 };
    if (body !== undefined) {
      options.data = JSON.stringify(body);
      options.contentType = contentType || 'application/json';
    }
    return $.ajax(options);
  }

  function failure(xhr, what) {
    var detail = xhr.statusText || 'no answer';
    try {
      detail = JSON.parse(xhr.responseText).error || detail;
    } catch (ignored) { /* not JSON */ }
    if (xhr.status === 401 || xhr.status === 403) {
      detail = 'not allowed (' + xhr.status + '): log in to Orthanc again';
    }
    return what + ' failed: ' + (xhr.status ? xhr.status + ' ' : '') + detail;
  }

  // DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) -> the browser's local date and time; the raw value when it is not a DT.
  function formatDateTime(dt) {
    var m = /^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-])?(\d{2})?(\d{2})?$/.exec(dt || '');
    if (!m) {
      return dt || '';
    }
    var utc = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
    if (m[7]) {
      utc -= (m[7] === '-' ? -1 : 1) * ((+m[8]) * 60 + (+(m[9] || 0))) * 60000;
    }
    return new Date(utc).toLocaleString();
  }

  function stateBadge(state) {
    return $('<span>').addClass('ai-state ai-state-' + (STATES[state] || 'other')).text(state);
  }

  function seriesLink(series) {
    var label = [series.Modality, series.SeriesDescription].filter(Boolean).join(' · ') || series.SeriesInstanceUID;
    if (series.ID) {
      return $('<a>').attr('href', '#series?uuid=' + series.ID).addClass('ai-result').text(label);
    }
    return $('<span>').attr('title', series.SeriesInstanceUID).text(label + ' (not in this Orthanc)');
  }

  function modelName(item) {
    return item.Model + (item.ModelVersion ? ' ' + item.ModelVersion : '');
  }

  function injectStyle() {
    if (!$('#ai-orchestrator-style').length) {
      $('<style>').attr('id', 'ai-orchestrator-style').text(CSS).appendTo('head');
    }
  }

  // ---- study page ------------------------------------------------------------------------------------------

  function studyPanel() {
    var panel = $('#ai-panel');
    if (panel.length) {
      return panel;
    }
    injectStyle();
    panel = $('<div>').attr('id', 'ai-panel');
    var toolbar = $('<div>').addClass('ai-toolbar ui-body ui-body-c ui-corner-all').appendTo(panel);
    $('<h3>').text('AI orchestrator').appendTo(toolbar);
    $('<span>').addClass('ai-note ai-updated').appendTo(toolbar);
    $('<button>').attr({ type: 'button', id: 'ai-run' }).addClass('ai-button ai-button-primary')
      .text('Run AI model').appendTo(toolbar);
    $('<div>').addClass('ai-error').hide().appendTo(panel);
    $('<ul>').addClass('ai-models').attr({ id: 'ai-models', 'data-role': 'listview', 'data-inset': 'true',
                                           'data-theme': 'e' }).hide().appendTo(panel);
    $('<ul>').attr({ id: 'ai-workitems', 'data-role': 'listview', 'data-inset': 'true' }).appendTo(panel);
    $('#list-series').parent().prepend(panel);  // above the series list and its filter bar
    panel.find('ul').listview();
    panel.on('click', '#ai-run', toggleModels);
    panel.on('click', '.ai-run-model', runModel);
    panel.on('click', '.ai-cancel', cancelWorkitem);
    return panel;
  }

  function showError(panel, message) {
    panel.find('.ai-error').text(message || '').toggle(Boolean(message));
  }

  function refreshStudy() {
    var study = $.mobile.pageData && $.mobile.pageData.uuid;
    if (!study || $.mobile.pageData.active !== 'study') {
      return;
    }
    var panel = studyPanel();
    if (shown.study !== study) {  // another study: nothing of the previous one stays on screen
      shown.study = study;
      seen = null;
      panel.find('#ai-workitems').empty().listview('refresh');
      panel.find('#ai-models').empty().hide();
      showError(panel, '');
    }
    var mine = ++generation;
    clearTimeout(timer);
    call('GET', '/studies/' + study + '/workitems').done(function (answer) {
      if (mine !== generation) {
        return;
      }
      showError(panel, '');
      renderWorkitems(panel, answer);
      if (finishedSinceLastLook(answer.Workitems || []) && typeof window.RefreshStudy === 'function') {
        window.RefreshStudy();  // Explorer's own series list, now with the new result series
      }
      panel.find('.ai-updated').text((answer.Active ? 'refreshing while work runs · ' : '') + 'updated ' +
                                     new Date().toLocaleTimeString());
      if (answer.Active) {
        timer = setTimeout(function () {
          if (mine === generation) {
            refreshStudy();
          }
        }, REFRESH_MS);
      }
    }).fail(function (xhr) {
      if (mine === generation) {
        showError(panel, failure(xhr, 'Reading the AI workitems'));
      }
    });
  }

  // Whether a workitem completed since this page's last look (one it saw open, or a new one already done).
  function finishedSinceLastLook(items) {
    var finished = false;
    var now = {};
    $.each(items, function (_, item) {
      now[item.Workitem] = item.State === 'SCHEDULED' || item.State === 'IN PROGRESS';
      if (seen !== null && seen[item.Workitem] !== false && item.State === 'COMPLETED') {
        finished = true;
      }
    });
    seen = now;
    return finished;
  }

  function renderWorkitems(panel, answer) {
    var list = panel.find('#ai-workitems').empty();
    var items = answer.Workitems || [];
    list.append($('<li>').attr('data-role', 'list-divider').text('AI workitems of this study')
      .append($('<span>').addClass('ui-li-count').text(items.length)));
    if (!items.length) {
      list.append($('<li>').addClass('ai-empty').text('No AI workitem yet. "Run AI model" schedules one.'));
    }
    $.each(items, function (_, item) {
      list.append(renderWorkitem(item));
    });
    list.listview('refresh');
  }

  function renderWorkitem(item) {
    var li = $('<li>').addClass('ai-item').attr({ 'data-workitem': item.Workitem, 'data-state': item.State });
    var head = $('<div>').addClass('ai-item-head').appendTo(li);
    $('<h3>').addClass('ai-model').text(modelName(item)).appendTo(head);
    head.append(stateBadge(item.State));
    if (item.CancelRequested) {
      head.append($('<span>').addClass('ai-state').text('cancel requested'));
    }
    var open = item.State === 'SCHEDULED' || item.State === 'IN PROGRESS';
    if (open && item.Progress !== null && item.Progress !== undefined) {  // a final state says it all
      head.append($('<span>').addClass('ai-progress').attr('title', item.ProgressDescription || '')
        .append($('<div>').css('width', Math.max(0, Math.min(100, item.Progress)) + '%')));
      head.append($('<span>').addClass('ai-percent').text(Math.round(item.Progress) + ' %'));
    }
    if (open && !item.CancelRequested) {
      head.append($('<button>').attr('type', 'button').addClass('ai-button ai-button-danger ai-cancel')
        .attr('data-workitem', item.Workitem).text('Cancel'));
    }
    var facts = [];
    if (item.ProgressDescription && open) {
      facts.push(item.ProgressDescription);
    }
    if (item.Priority) {
      facts.push(item.Priority.toLowerCase() + ' priority');
    }
    if (item.Ended) {
      facts.push('ended ' + formatDateTime(item.Ended));
    } else if (item.Started) {
      facts.push('started ' + formatDateTime(item.Started));
    } else if (item.Scheduled) {
      facts.push('scheduled ' + formatDateTime(item.Scheduled));
    }
    if (item.Performer) {
      facts.push('by ' + item.Performer);
    }
    $('<p>').text(facts.join(' · ')).appendTo(li);
    if (item.State === 'CANCELED' && item.Reason) {
      $('<p>').addClass('ai-reason').text('Reason: ' + item.Reason).appendTo(li);
    }
    if (item.Results && item.Results.length) {
      var results = $('<p>').addClass('ai-results').text('Results: ');
      $.each(item.Results, function (i, series) {
        if (i) {
          results.append(', ');
        }
        results.append(seriesLink(series));
      });
      li.append(results);
    }
    $('<p>').addClass('ai-note ai-mono').text('workitem ' + item.Workitem).appendTo(li);
    return li;
  }

  function toggleModels() {
    var panel = studyPanel();
    var list = panel.find('#ai-models');
    if (list.is(':visible')) {
      list.hide();
      return;
    }
    var study = shown.study;
    list.empty().append($('<li>').text('Looking for the models that apply to this study…')).show()
      .listview('refresh');
    call('GET', '/studies/' + study + '/models').done(function (models) {
      if (study !== shown.study) {
        return;
      }
      list.empty().append($('<li>').attr('data-role', 'list-divider').text('Models that apply to this study'));
      if (!models.length) {
        list.append($('<li>').addClass('ai-no-model').text('No loaded model applies to this study.'));
      }
      $.each(models, function (_, model) {
        var images = 0;
        $.each(model.series || [], function (_, s) { images += s.Images || 0; });
        var link = $('<a>').attr({ href: '#', 'data-model': model.name }).addClass('ai-run-model')
          .append($('<h3>').text('Run ' + model.name + (model.version ? ' ' + model.version : '')))
          .append($('<p>').text([model.description, (model.series || []).length + ' series, ' + images +
                                 ' images', 'on ' + model.device].filter(Boolean).join(' · ')));
        list.append($('<li>').attr('data-icon', 'arrow-r').append(link));
      });
      list.listview('refresh');
    }).fail(function (xhr) {
      list.hide();
      showError(panel, failure(xhr, 'Listing the models'));
    });
  }

  function runModel(event) {
    event.preventDefault();
    var panel = studyPanel();
    var name = $(this).attr('data-model');
    panel.find('#ai-models').hide();
    call('POST', '/studies/' + shown.study + '/run', { model: name }).done(function () {
      refreshStudy();
    }).fail(function (xhr) {
      showError(panel, failure(xhr, 'Starting ' + name));
    });
  }

  function cancelWorkitem() {
    var panel = studyPanel();
    var button = $(this).attr('disabled', 'disabled');
    var uid = button.attr('data-workitem');
    var reason = { '00741238': { vr: 'LT', Value: ['Canceled from Orthanc Explorer'] } };  // ReasonForCancellation
    call('POST', '/workitems/' + uid + '/cancelrequest', reason, 'application/dicom+json').done(function () {
      refreshStudy();
    }).fail(function (xhr) {
      button.removeAttr('disabled');
      showError(panel, failure(xhr, 'Canceling ' + uid));
    });
  }

  // ---- series page -----------------------------------------------------------------------------------------

  function seriesPanel() {
    var panel = $('#ai-series-panel');
    if (!panel.length) {
      injectStyle();
      panel = $('<ul>').attr({ id: 'ai-series-panel', 'data-role': 'listview', 'data-inset': 'true',
                               'data-theme': 'e', 'data-divider-theme': 'c' });
      panel.insertAfter('#series-info').listview();
    }
    return panel;
  }

  function refreshSeries() {
    var series = $.mobile.pageData && $.mobile.pageData.uuid;
    if (!series || $.mobile.pageData.active !== 'series') {
      return;
    }
    var panel = seriesPanel().empty().hide();
    shown.series = series;
    $.ajax({ url: '../series/' + series, dataType: 'json', cache: false }).done(function (orthancSeries) {
      call('GET', '/studies/' + orthancSeries.ParentStudy + '/workitems').done(function (answer) {
        if (shown.series === series) {
          renderSeries(panel, series, orthancSeries, answer);
        }
      }).fail(function (xhr) {
        panel.append($('<li>').addClass('ai-error').text(failure(xhr, 'Reading the AI workitems'))).show()
          .listview('refresh');
      });
    });
  }

  function renderSeries(panel, series, orthancSeries, answer) {
    var producedBy = [];
    var readBy = [];
    $.each(answer.Workitems || [], function (_, item) {
      $.each(item.Results || [], function (_, s) { if (s.ID === series) { producedBy.push(item); } });
      $.each(item.Inputs || [], function (_, s) { if (s.ID === series) { readBy.push(item); } });
    });
    var ours = (orthancSeries.MainDicomTags || {}).Manufacturer === 'Orthanc AI Orchestrator';
    if (!producedBy.length && !readBy.length && !ours) {
      return;
    }
    var studyLink = '#study?uuid=' + orthancSeries.ParentStudy;
    panel.append($('<li>').attr('data-role', 'list-divider').text('AI orchestrator'));
    $.each(producedBy, function (_, item) {
      panel.append($('<li>').addClass('ai-produced-by')
        .append($('<p>').text('Result of the AI model'))
        .append($('<h3>').addClass('ai-model').text(modelName(item)))
        .append($('<p>').append('workitem ').append($('<span>').addClass('ai-mono ai-workitem').text(item.Workitem)))
        .append($('<p>').append(stateBadge(item.State))
          .append(item.Ended ? ' ' + formatDateTime(item.Ended) : '')));
    });
    if (!producedBy.length && ours) {
      panel.append($('<li>').addClass('ai-produced-by')
        .append($('<h3>').text('Written by the AI orchestrator'))
        .append($('<p>').text('No workitem of this study lists it (its workitem may have been purged).')));
    }
    if (readBy.length) {
      var li = $('<li>').addClass('ai-read-by').append($('<p>').text('Input of the AI workitems'));
      $.each(readBy, function (_, item) {
        li.append($('<p>').append($('<strong>').text(modelName(item) + ' ')).append(stateBadge(item.State)));
      });
      panel.append(li);
    }
    panel.append($('<li>').attr('data-icon', 'arrow-l')
      .append($('<a>').attr('href', studyLink).text('The study\'s AI workitems')));
    panel.show().listview('refresh');
  }

  // ---- wiring ----------------------------------------------------------------------------------------------

  $(document).on('pagebeforeshow', '#study', refreshStudy);
  $(document).on('pagebeforeshow', '#series', refreshSeries);
  $(document).on('pagebeforehide', '#study', function () {
    generation++;  // leaving the page stops the refresh
    clearTimeout(timer);
    shown.study = null;
  });
  $(window).on('hashchange', function () {  // Explorer's own hashchange re-shows a page for another resource
    var data = $.mobile.pageData || {};
    if (data.active === 'study' && data.uuid !== shown.study) {
      refreshStudy();
    } else if (data.active === 'series' && data.uuid !== shown.series) {
      refreshSeries();
    }
  });
}(jQuery));
