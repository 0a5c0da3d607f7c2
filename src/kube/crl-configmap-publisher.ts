import { ConfigMapPublisher, type ConfigMapPublisherOptions } from './configmap-publisher.js';

/** istiod's names (PILOT_CRL_CONFIGMAP default, key ca-crl.pem), mounted optionally by the injector and ztunnel. */
export const CRL_CONFIGMAP = 'istio-ca-crl';
export const CRL_CONFIGMAP_KEY = 'ca-crl.pem';
export const CRL_CONFIGMAPS_METRIC = 'svid_ca_crl_configmaps';

export interface CrlConfigMapPublisherOptions extends ConfigMapPublisherOptions {
  /** The current ca-crl.pem verbatim, '' when the folder has none (authority.bundle.crlPem). */
  crl: () => string;
}

/**
 * Keeps ConfigMap istio-ca-crl (key ca-crl.pem, label istio.io/config=true) equal to the cacerts
 * folder's ca-crl.pem in every namespace (--publish-crl-configmap, issue #16). Without a CRL the key
 * holds '' (istiod publishes the same with PILOT_ENABLE_CA_CRL): removing ca-crl.pem empties every
 * ConfigMap, so clients drop the revocations, where istiod keeps the last CRL (istio/istio#61073).
 * Progress in svid_ca_crl_configmaps{state}.
 */
export class CrlConfigMapPublisher extends ConfigMapPublisher {
  constructor(o: CrlConfigMapPublisherOptions) {
    super({ name: CRL_CONFIGMAP, key: CRL_CONFIGMAP_KEY, metric: CRL_CONFIGMAPS_METRIC, label: 'CRL', contentName: 'CRL', content: o.crl }, o);
  }
}
