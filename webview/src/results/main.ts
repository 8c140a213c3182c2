// Results panel webview entry: restore state, listen to the host, then say ready.
import '../../../media/panel.css';
import { parseHostToResults, parseResultsState } from '../protocolGuards';
import { listenToHost } from '../shared/messageInbox';
import { loadState, postToHost, saveState } from '../shared/vscodeApi';
import { defaultResultsState, ResultsApp } from './resultsApp';

const root = document.getElementById('app') ?? document.body.appendChild(document.createElement('main'));
const app = new ResultsApp(root, parseResultsState(loadState()) ?? defaultResultsState(), saveState);
listenToHost(parseHostToResults, (message) => app.handle(message));
postToHost({ type: 'ready' });
