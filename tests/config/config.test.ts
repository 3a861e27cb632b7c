import { describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { loadConfig, ConfigError, CONFIG_DOCS } from '../../config/index.ts';

describe('configuration from KEEL_* variables', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    expect(c.dataDir).toBe(resolve('.keel'));
    expect(c.natsPort).toBe(4222);
    expect(c.httpPort).toBe(8080);
    expect(c.httpHost).toBe('127.0.0.1');
    expect(c.natsUrl).toBeUndefined();
    expect(c.state).toBe(`sqlite:${resolve('.keel', 'keel.db')}`);
    expect(c.subjectPrefix).toBe('keel');
  });

  it('reads every variable it documents', () => {
    const c = loadConfig({ KEEL_DATA_DIR: '/srv/k', KEEL_NATS_PORT: '5222', KEEL_HTTP_PORT: '0', KEEL_NATS_URL: 'nats://a:1', KEEL_STATE: 'mongodb://m/k', KEEL_SUBJECT_PREFIX: 'acme' });
    expect(c).toMatchObject({ dataDir: '/srv/k', natsPort: 5222, httpPort: 0, natsUrl: 'nats://a:1', state: 'mongodb://m/k', subjectPrefix: 'acme' });
    expect(CONFIG_DOCS.map((d) => d.name)).toEqual(expect.arrayContaining(['KEEL_DATA_DIR', 'KEEL_NATS_PORT', 'KEEL_NATS_URL', 'KEEL_HTTP_PORT', 'KEEL_STATE']));
  });

  it('KEEL_SMTP_ACCEPT: domains and addresses, default the domain of KEEL_SMTP_FROM', () => {
    expect(loadConfig({}).smtpAccept).toEqual(['keel.local']);
    expect(loadConfig({ KEEL_SMTP_FROM: 'Acme Support <help@Acme.example>' }).smtpAccept).toEqual(['acme.example']);
    expect(loadConfig({ KEEL_SMTP_ACCEPT: 'Acme.example, support@other.example ,*' }).smtpAccept).toEqual(['acme.example', 'support@other.example', '*']);
    expect(() => loadConfig({ KEEL_SMTP_ACCEPT: 'a b@c' })).toThrow(/KEEL_SMTP_ACCEPT/);
    expect(() => loadConfig({ KEEL_SMTP_ACCEPT: ' , ' })).toThrow(/KEEL_SMTP_ACCEPT names no recipient/);
  });

  it('names every bad variable in one error', () => {
    try {
      loadConfig({ KEEL_HTTP_PORT: 'x', KEEL_NATS_PORT: '70000', KEEL_SUBJECT_PREFIX: 'a.b' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const msg = (err as Error).message;
      expect(msg).toMatch(/KEEL_HTTP_PORT/);
      expect(msg).toMatch(/KEEL_NATS_PORT/);
      expect(msg).toMatch(/KEEL_SUBJECT_PREFIX/);
    }
  });
});
