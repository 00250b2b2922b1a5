// The page: two views (Ask, Engine) chosen by the URL's #, the API key
// field, the gateway's state in the header and a notice line for what
// needs the reader (a key, a gateway that went away).

import { apiKey, setApiKey, showMessage } from './api.js';
import { loadCollections, setupAsk } from './ask.js';
import { startEngine } from './engine.js';

const $ = (id) => document.getElementById(id);

function showView() {
    const view = location.hash === '#engine' ? 'engine' : 'ask';
    // (the views' ids are not the #'s: the browser would scroll to them)
    $('ask-view').hidden = view !== 'ask';
    $('engine-view').hidden = view !== 'engine';
    $('tab-ask').classList.toggle('current', view === 'ask');
    $('tab-engine').classList.toggle('current', view === 'engine');
}

const notice = (e) => showMessage($('notice'), e);

const STATES = {
    up: 'gateway up',
    'no-engine': 'engine unavailable',
    down: 'gateway unreachable',
    auth: 'API key needed',
};

let collectionsLoaded = false;
let lastState = null;

function onState(state, status, error) {
    const el = $('gateway-state');
    el.dataset.state = state;
    el.textContent = STATES[state] || 'status failed';
    if (state === 'up' || state === 'no-engine') {
        if (state === 'no-engine') {
            notice({ kind: 'engine', message: `The engine is unavailable: `
                     + `${status.engine.reason}` });
        } else if (lastState !== 'up' && lastState !== null) {
            notice(null);
        }
        if (!collectionsLoaded) {
            loadCollections(notice).then((ok) => { collectionsLoaded = ok; });
        }
    } else {
        notice(error);
    }
    lastState = state;
}

function setupKey() {
    const input = $('key');
    input.value = apiKey();
    $('key-form').addEventListener('submit', (ev) => {
        ev.preventDefault();
        setApiKey(input.value.trim());
        notice(null);
        collectionsLoaded = false;
        lastState = null;
        loadCollections(notice).then((ok) => { collectionsLoaded = ok; });
    });
}

window.addEventListener('hashchange', showView);
showView();
setupKey();
setupAsk();
startEngine(onState);
