// Dashboard webview entry: restore state, listen to the host, then say ready.
import '../../../media/panel.css';
import { parseDashboardState, parseHostToDashboard } from '../protocolGuards';
import { listenToHost } from '../shared/messageInbox';
import { loadState, postToHost } from '../shared/vscodeApi';
import { DashboardApp, defaultDashboardState } from './dashboardApp';

const root = document.getElementById('app') ?? document.body.appendChild(document.createElement('main'));
const app = new DashboardApp(root, parseDashboardState(loadState()) ?? defaultDashboardState());
listenToHost(parseHostToDashboard, (message) => app.handle(message));
postToHost({ type: 'ready' });
