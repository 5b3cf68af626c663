// Independent XAdES check with xadesjs, for the Python tests.
//
//   node verify.js FILE.xml [FILE.xml...]
//
// Prints one JSON line per file: {"file", "signatures": [{id, valid, error, signedProperties,
// unsigned: [localName...], timestamps: n}]}. "valid" is xadesjs's core
// verification (SignedInfo signature and every reference, SignedProperties
// included). VerifySigningCertificate() is not called: xadesjs knows only the
// v1 SigningCertificate and rejects SigningCertificateV2.
"use strict";

const fs = require("fs");
const { Crypto } = require("@peculiar/webcrypto");
const xmldom = require("@xmldom/xmldom");
const xpath = require("xpath");
const xadesjs = require("xadesjs");

xadesjs.Application.setEngine("NodeJS", new Crypto());
xadesjs.setNodeDependencies({
  DOMParser: xmldom.DOMParser,
  XMLSerializer: xmldom.XMLSerializer,
  DOMImplementation: xmldom.DOMImplementation,
  xpath,
});

const DS = "http://www.w3.org/2000/09/xmldsig#";
const XADES141 = "http://uri.etsi.org/01903/v1.4.1#";

// xadesjs 2.6.8 parses ArchiveTimeStamp only in the old v1.3.2 namespace and
// throws "Malformed element" on EN 319 132-1's xades141:ArchiveTimeStamp. Unsigned
// properties are outside what the signature covers: take the xades141 ones out
// (reporting them) so that xadesjs checks the rest.
function takeOutXades141(doc) {
  const found = [];
  const nodes = doc.getElementsByTagNameNS(XADES141, "*");
  const list = [];
  for (let i = 0; i < nodes.length; i++) list.push(nodes.item(i));
  for (const node of list) {
    if (node.parentNode && node.parentNode.namespaceURI !== XADES141) {
      found.push(node.localName);
      node.parentNode.removeChild(node);
    }
  }
  return found;
}

async function signingKey(signed) {
  // LoadXml sets Algorithm from SignedInfo/SignatureMethod.
  for (const info of signed.XmlSignature.KeyInfo.GetIterator()) {
    if (Array.isArray(info.Certificates) && info.Certificates.length > 0) {
      return info.Certificates[0].exportKey(signed.Algorithm);
    }
  }
  throw new Error("no X509Certificate in KeyInfo");
}

async function check(file) {
  const text = fs.readFileSync(file, "latin1");
  // xmldom takes a JS string: decode per the declared encoding.
  const declared = /^<\?xml[^>]*encoding=["']([A-Za-z0-9._-]+)["']/.exec(text);
  const encoding = declared ? declared[1].toLowerCase() : "utf-8";
  const source = /^(iso-8859-1|latin1|us-ascii)$/.test(encoding)
    ? text
    : fs.readFileSync(file, "utf8");
  const doc = xadesjs.Parse(source);
  const xades141 = takeOutXades141(doc);
  const nodes = doc.getElementsByTagNameNS(DS, "Signature");
  const results = [];
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes.item(i);
    const entry = { id: node.getAttribute("Id"), valid: false, error: null };
    try {
      const signed = new xadesjs.SignedXml(doc);
      signed.LoadXml(node);
      // xmldsigjs imports *every* X509Certificate of KeyInfo with the signature's
      // algorithm, which throws for an RSA intermediate under an EC signer: hand it
      // the first certificate's key (the signing certificate, as we write it).
      entry.valid = await signed.Verify(await signingKey(signed));
      const props = signed.SignedProperties;
      entry.signedProperties = Boolean(props && props.Id);
      entry.signingTime = props && props.SignedSignatureProperties.SigningTime.Value
        ? props.SignedSignatureProperties.SigningTime.Value.toISOString()
        : null;
      const usp = signed.UnsignedProperties
        ? signed.UnsignedProperties.UnsignedSignatureProperties
        : null;
      entry.unsigned = [];
      entry.timestamps = 0;
      if (usp) {
        for (const item of usp.GetIterator()) {
          entry.unsigned.push(item.constructor.name);
          if (item.EncapsulatedTimeStamp && item.EncapsulatedTimeStamp.Count > 0) {
            entry.timestamps += 1;
          }
        }
      }
    } catch (error) {
      entry.error = String(error && error.message ? error.message : error);
    }
    results.push(entry);
  }
  return { file, signatures: results, xades141 };
}

async function main() {
  for (const file of process.argv.slice(2)) {
    let result;
    try {
      result = await check(file);
    } catch (error) {
      // A document xadesjs cannot even parse: reported, not fatal for the others.
      result = { file, signatures: [], error: String(error && error.message ? error.message : error) };
    }
    process.stdout.write(JSON.stringify(result) + "\n");
  }
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(2);
});
