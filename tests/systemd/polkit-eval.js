// polkit-eval.js RULES-FILE ACTION-ID USER [KEY=VALUE...]: evaluates a polkit JavaScript
// rules file the way polkitd does for one request, without polkitd (no system bus here):
// the file's polkit.addRule() functions run in order with an action (its id, and lookup()
// answering from the KEY=VALUE details, e.g. unit= and verb= for systemd's manage-units)
// and a subject (user); the first answer other than NOT_HANDLED wins. Prints that answer
// ("yes", "no", "auth_admin", ...) or "not_handled" (polkitd then falls back to the
// action's default: auth_admin for manage-units, i.e. a daemon without an agent is denied).
'use strict';
const fs = require('fs');
const vm = require('vm');
const [file, id, user, ...details] = process.argv.slice(2);
if (!file || !id || !user) {
	console.error('usage: polkit-eval.js RULES-FILE ACTION-ID USER [KEY=VALUE...]');
	process.exit(2);
}
const rules = [];
const polkit = {
	Result: { NO: 'no', YES: 'yes', AUTH_SELF: 'auth_self', AUTH_SELF_KEEP: 'auth_self_keep',
		AUTH_ADMIN: 'auth_admin', AUTH_ADMIN_KEEP: 'auth_admin_keep', NOT_HANDLED: null },
	addRule: (f) => rules.push(f),
	addAdminRule: () => {},
	log: (m) => console.error('polkit.log: ' + m),
	spawn: () => { throw new Error('polkit.spawn is not available here'); },
};
const vars = new Map(details.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const action = { id, lookup: (k) => vars.get(k) };
const subject = { user, groups: [], local: true, active: false, isInGroup: () => false,
	isInNetGroup: () => false };
vm.runInNewContext(fs.readFileSync(file, 'utf8'), { polkit }, { filename: file });
for (const r of rules) {
	const res = r(action, subject);
	if (res !== null && res !== undefined) {
		console.log(res);
		process.exit(0);
	}
}
console.log('not_handled');
