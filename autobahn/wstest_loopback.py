# -*- coding: utf-8 -*-
"""Run wstest (Autobahn|Testsuite 0.8.2) with every listener bound to loopback.

Python 2.7 only: run it with the interpreter of the autobahn virtualenv, e.g.

    $VENV/bin/python autobahn/wstest_loopback.py -m fuzzingserver -s SPEC -u 0

All arguments are passed to wstest unchanged.

Why: `wstest -m fuzzingserver` (and its optional web UI) call
reactor.listenTCP(port, factory, backlog, interface='') which binds every
interface. Here the reactor's listenTCP/listenSSL are replaced by versions that
always bind 127.0.0.1, whatever interface the caller asked for. Outgoing
connections (fuzzingclient mode) are not affected.
"""
import sys

LOOPBACK = '127.0.0.1'


def _bind_loopback(original, name):
    def listen(port, factory, *args, **kwargs):
        # Signatures: listenTCP(port, factory, backlog=50, interface='')
        #             listenSSL(port, factory, contextFactory, backlog=50, interface='')
        # `interface` is the last positional parameter; `args` here starts
        # after `factory`.
        pos = 1 if name == 'listenTCP' else 2
        args = list(args)
        if len(args) > pos:
            args[pos] = LOOPBACK
        else:
            kwargs['interface'] = LOOPBACK
        return original(port, factory, *args, **kwargs)
    listen.__name__ = name
    return listen


def main():
    # Importing wstest installs the reactor wstest wants (epoll on Linux) via
    # its choosereactor module, so it must come before anything touches the
    # global reactor.
    from autobahntestsuite import wstest
    from twisted.internet import reactor

    reactor.listenTCP = _bind_loopback(reactor.listenTCP, 'listenTCP')
    reactor.listenSSL = _bind_loopback(reactor.listenSSL, 'listenSSL')

    sys.argv[0] = 'wstest'
    return wstest.run()


if __name__ == '__main__':
    sys.exit(main())
