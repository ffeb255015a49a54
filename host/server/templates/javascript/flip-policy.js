// {{name}} — a wasmpbx flip policy: a user may move a live call to any of their other
// registered devices; emergency calls stay where they are.

const deny = (reason) => ({ tag: 'deny', val: reason });

export const flipPolicy = {
  decide(request) {
    if (request.call.emergency) return deny('emergency calls cannot be flipped');
    const targets = request.candidates
      .filter((d) => d.userId === request.userId && d.name !== request.call.currentDevice)
      .map((d) => d.name);
    if (targets.length === 0) return deny('no other device of the user is registered');
    return { tag: 'allow', val: { targets, ringTimeoutMs: 0 } };
  },
};
