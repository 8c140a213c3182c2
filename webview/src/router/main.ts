// Router panel webview entry: restore state, listen to the host, then say ready.
import '../../../media/panel.css';
import { parseHostToRouter, parseRouterState } from '../protocolGuards';
import { listenToHost } from '../shared/messageInbox';
import { loadState, postToHost } from '../shared/vscodeApi';
import { defaultRouterState, RouterApp } from './routerApp';

const root = document.getElementById('app') ?? document.body.appendChild(document.createElement('main'));
const app = new RouterApp(root, parseRouterState(loadState()) ?? defaultRouterState());
listenToHost(parseHostToRouter, (message) => app.handle(message));
postToHost({ type: 'ready' });
